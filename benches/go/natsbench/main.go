// natsbench: one publisher to one subscriber over the NATS protocol with Debian's nats.go, as an
// independent cross-check of `sluice bench --protocol nats`. Prints one line of JSON:
// {"msgs":N,"size":B,"msgs_per_s":R}.
//
// Build: GOPATH=/usr/share/gocode GO111MODULE=off go build -o natsbench ./benches/go/natsbench
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
)

func main() {
	server := flag.String("s", "nats://127.0.0.1:4222", "server URL")
	msgs := flag.Int("msgs", 1000000, "messages to publish")
	size := flag.Int("size", 16, "payload bytes")
	flag.Parse()

	sub, err := nats.Connect(*server)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer sub.Close()
	pub, err := nats.Connect(*server)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer pub.Close()

	done := make(chan struct{})
	received := 0
	s, err := sub.Subscribe("bench.go", func(m *nats.Msg) {
		received++
		if received == *msgs {
			close(done)
		}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "subscribe:", err)
		os.Exit(1)
	}
	// Unlimited pending: the subscriber must not drop messages while it catches up.
	if err := s.SetPendingLimits(-1, -1); err != nil {
		fmt.Fprintln(os.Stderr, "pending limits:", err)
		os.Exit(1)
	}
	if err := sub.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "flush:", err)
		os.Exit(1)
	}

	payload := make([]byte, *size)
	start := time.Now()
	for i := 0; i < *msgs; i++ {
		if err := pub.Publish("bench.go", payload); err != nil {
			fmt.Fprintln(os.Stderr, "publish:", err)
			os.Exit(1)
		}
	}
	if err := pub.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "flush:", err)
		os.Exit(1)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		fmt.Fprintf(os.Stderr, "timed out: %d of %d received\n", received, *msgs)
		os.Exit(1)
	}
	elapsed := time.Since(start).Seconds()
	out, _ := json.Marshal(map[string]interface{}{
		"msgs": *msgs, "size": *size, "msgs_per_s": float64(*msgs) / elapsed,
	})
	fmt.Println(string(out))
}
