// natsbench: core NATS publish/subscribe with Debian's nats.go, an independent client for
// `benches/compare`: one publisher to N subscribers (each on its own connection), flat out or at
// a fixed rate. Each payload of 8 bytes or more carries its send time, so the subscribers measure
// one-way latency. Prints one line of JSON:
// {"msgs":N,"subs":S,"size":B,"msgs_per_s":R,"mb_per_s":M,"p50_us":..,"p99_us":..,"p999_us":..}
// where msgs_per_s counts published messages (each reaches every subscriber).
//
// Build: GOPATH=/usr/share/gocode GO111MODULE=off go build -o natsbench ./benches/go/natsbench
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

func fail(what string, err error) {
	fmt.Fprintln(os.Stderr, what+":", err)
	os.Exit(1)
}

func main() {
	server := flag.String("s", "nats://127.0.0.1:4222", "server URL")
	msgs := flag.Int("msgs", 1000000, "messages to publish")
	size := flag.Int("size", 16, "payload bytes")
	subs := flag.Int("subs", 1, "subscribers, each on its own connection")
	rate := flag.Int("rate", 0, "messages per second to publish (0: as fast as possible)")
	subject := flag.String("subject", "bench.go", "subject")
	flag.Parse()

	var wg sync.WaitGroup
	latencies := make([][]int64, *subs)
	for i := 0; i < *subs; i++ {
		nc, err := nats.Connect(*server)
		if err != nil {
			fail("connect", err)
		}
		defer nc.Close()
		wg.Add(1)
		i := i
		received := 0
		lat := make([]int64, 0, *msgs)
		s, err := nc.Subscribe(*subject, func(m *nats.Msg) {
			if len(m.Data) >= 8 {
				sent := int64(binary.LittleEndian.Uint64(m.Data))
				lat = append(lat, time.Now().UnixNano()-sent)
			}
			received++
			if received == *msgs {
				latencies[i] = lat
				wg.Done()
			}
		})
		if err != nil {
			fail("subscribe", err)
		}
		// Unlimited pending: a subscriber must not drop messages while it catches up.
		if err := s.SetPendingLimits(-1, -1); err != nil {
			fail("pending limits", err)
		}
		if err := nc.Flush(); err != nil {
			fail("flush", err)
		}
	}
	pub, err := nats.Connect(*server)
	if err != nil {
		fail("connect", err)
	}
	defer pub.Close()

	payload := make([]byte, *size)
	var interval time.Duration
	if *rate > 0 {
		interval = time.Second / time.Duration(*rate)
	}
	start := time.Now()
	for i := 0; i < *msgs; i++ {
		if interval > 0 {
			due := start.Add(time.Duration(i) * interval)
			for time.Now().Before(due) {
			}
		}
		if len(payload) >= 8 {
			binary.LittleEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		}
		if err := pub.Publish(*subject, payload); err != nil {
			fail("publish", err)
		}
	}
	if err := pub.Flush(); err != nil {
		fail("flush", err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		fmt.Fprintf(os.Stderr, "timed out waiting for %d subscribers\n", *subs)
		os.Exit(1)
	}
	elapsed := time.Since(start).Seconds()
	var all []int64
	for _, l := range latencies {
		all = append(all, l...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		at := int(p * float64(len(all)-1))
		return float64(all[at]) / 1000
	}
	out, _ := json.Marshal(map[string]interface{}{
		"msgs": *msgs, "subs": *subs, "size": *size,
		"msgs_per_s": float64(*msgs) / elapsed,
		"mb_per_s":   float64(*msgs) * float64(*size) / elapsed / 1e6,
		"p50_us":     pct(0.50), "p99_us": pct(0.99), "p999_us": pct(0.999),
	})
	fmt.Println(string(out))
}
