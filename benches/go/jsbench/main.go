// jsbench: JetStream through its API with Debian's nats.go, an independent client, against any
// server that speaks it. Three modes:
//
//	pub:     asynchronous publish to a stream with -inflight acks outstanding; latency is publish
//	         to ack. Creates the stream (-replicas copies) unless it exists.
//	create:  only creates the stream, so that a cluster can elect its leader before pub measures.
//	consume: a durable pull consumer fetching -batch at a time and acking every message; the
//	         stream must hold -msgs messages (run pub first).
//
// Prints one line of JSON: {"mode":..,"msgs":N,"size":B,"msgs_per_s":R,"p50_us":..,"p99_us":..,
// "p999_us":..}.
//
// Build: GOPATH=/usr/share/gocode GO111MODULE=off go build -o jsbench ./benches/go/jsbench
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

func fail(what string, err error) {
	fmt.Fprintln(os.Stderr, what+":", err)
	os.Exit(1)
}

func main() {
	server := flag.String("s", "nats://127.0.0.1:4222", "server URL")
	mode := flag.String("mode", "pub", "pub or consume")
	stream := flag.String("stream", "BENCH", "stream name (subjects <stream>.>)")
	msgs := flag.Int("msgs", 200000, "messages to publish or consume")
	size := flag.Int("size", 16, "payload bytes")
	inflight := flag.Int("inflight", 256, "publishes awaiting their ack")
	batch := flag.Int("batch", 256, "messages per pull request")
	replicas := flag.Int("replicas", 1, "copies of the stream a new stream keeps (num_replicas)")
	flag.Parse()

	nc, err := nats.Connect(*server)
	if err != nil {
		fail("connect", err)
	}
	defer nc.Close()
	// publish keeps the window itself; nats.go's own limit counts the publish being made too and,
	// when reached, waits at most 200 ms for an ack and then fails the publish, which a server that
	// syncs every write (an ack 100+ ms late) trips. One above the window, it never waits.
	js, err := nc.JetStream(nats.PublishAsyncMaxPending(*inflight + 1))
	if err != nil {
		fail("jetstream", err)
	}
	subject := *stream + ".data"
	var latencies []time.Duration
	start := time.Now()
	switch *mode {
	case "pub":
		addStream(js, *stream, *replicas)
		latencies = publish(js, subject, *msgs, *size, *inflight)
	case "create":
		addStream(js, *stream, *replicas)
		fmt.Println(`{"mode":"create"}`)
		return
	case "consume":
		latencies = consume(js, *stream, subject, *msgs, *batch)
	default:
		fail("mode", fmt.Errorf("unknown mode %q", *mode))
	}
	elapsed := time.Since(start)
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	at := func(q float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[int(q*float64(len(latencies)-1))].Microseconds())
	}
	out, _ := json.Marshal(map[string]interface{}{
		"mode":       *mode,
		"msgs":       *msgs,
		"size":       *size,
		"msgs_per_s": float64(*msgs) / elapsed.Seconds(),
		"p50_us":     at(0.5),
		"p99_us":     at(0.99),
		"p999_us":    at(0.999),
	})
	fmt.Println(string(out))
}

// addStream creates the stream with its subjects <stream>.> and the given number of replicas, or
// leaves it as it is if it exists.
func addStream(js nats.JetStreamContext, stream string, replicas int) {
	_, err := js.AddStream(&nats.StreamConfig{
		Name:     stream,
		Subjects: []string{stream + ".>"},
		Replicas: replicas,
	})
	if err != nil && !strings.Contains(err.Error(), "already in use") {
		fail("add stream", err)
	}
}

// publish sends msgs asynchronously, at most inflight unacked (each publish waits for a slot, and
// an ack frees one), and returns each one's latency from publish to ack.
func publish(js nats.JetStreamContext, subject string, msgs, size, inflight int) []time.Duration {
	type sent struct {
		at     time.Time
		future nats.PubAckFuture
	}
	pending := make(chan sent, inflight)
	slots := make(chan struct{}, inflight)
	latencies := make([]time.Duration, 0, msgs)
	done := make(chan struct{})
	go func() {
		for s := range pending {
			select {
			case <-s.future.Ok():
				latencies = append(latencies, time.Since(s.at))
			case err := <-s.future.Err():
				fail("publish ack", err)
			}
			<-slots
		}
		close(done)
	}()
	payload := make([]byte, size)
	for i := 0; i < msgs; i++ {
		slots <- struct{}{}
		at := time.Now()
		future, err := js.PublishAsync(subject, payload)
		if err != nil {
			fail("publish", err)
		}
		pending <- sent{at, future}
	}
	close(pending)
	<-done
	return latencies
}

// consume fetches and acks msgs messages with a durable pull consumer; the latency is per fetch.
func consume(js nats.JetStreamContext, stream, subject string, msgs, batch int) []time.Duration {
	sub, err := js.PullSubscribe(subject, "jsbench", nats.BindStream(stream), nats.AckExplicit())
	if err != nil {
		fail("pull subscribe", err)
	}
	latencies := make([]time.Duration, 0, msgs/batch+1)
	received := 0
	for received < msgs {
		want := batch
		if msgs-received < want {
			want = msgs - received
		}
		at := time.Now()
		got, err := sub.Fetch(want, nats.MaxWait(5*time.Second))
		if err != nil {
			fail(fmt.Sprintf("fetch after %d", received), err)
		}
		latencies = append(latencies, time.Since(at))
		for _, m := range got {
			if err := m.Ack(); err != nil {
				fail("ack", err)
			}
		}
		received += len(got)
	}
	return latencies
}
