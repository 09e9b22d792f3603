package webhook

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// The dispatcher against a local HTTPS receiver (loopback, httptest's
// CA) and the test Postgres, with production settings (25 ms poll, 32
// workers). Run with `make bench-webhook`.

// BenchmarkEventLatency is outbox insert → received, one event at a time
// at random moments: the latency of a quiet system, where the poll
// interval dominates. The default poll and the former 100 ms one run side
// by side, so their ratio is of one run.
func BenchmarkEventLatency(b *testing.B) {
	for _, poll := range []time.Duration{0, 100 * time.Millisecond} {
		name := "poll=default"
		if poll > 0 {
			name = "poll=" + poll.String()
		}
		b.Run(name, func(b *testing.B) { eventLatency(b, poll) })
	}
}

func eventLatency(b *testing.B, poll time.Duration) {
	bb := setup(b)
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	got := make(chan string, 1)
	bb.rc.answer = func(n int, w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("webhook-id")
		mu.Lock()
		arrived[id] = time.Now()
		mu.Unlock()
		got <- id
	}
	d := bb.dispatcher(func(c *Config) { c.Now = time.Now; c.Logger = nil; c.PollInterval = poll })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		// A pause of a random length, so an event arrives at any point
		// of the dispatcher's poll cycle, not just after its last delivery.
		b.StopTimer()
		time.Sleep(time.Duration(rand.IntN(100)) * time.Millisecond)
		b.StartTimer()
		start := time.Now()
		id := bb.event(fmt.Sprintf("subj%d", i%50), int64(i/50+1), "session.succeeded")
		for r := <-got; r != id; r = <-got {
		}
		mu.Lock()
		lat = append(lat, arrived[id].Sub(start))
		mu.Unlock()
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
}

// BenchmarkDispatcherThroughput drains b.N events (over 1,000 subjects, so
// per-subject order leaves room for concurrency) to one endpoint.
func BenchmarkDispatcherThroughput(b *testing.B) {
	bb := setup(b)
	var mu sync.Mutex
	seen := map[string]bool{}
	all := make(chan struct{})
	bb.rc.answer = func(n int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("webhook-id")] = true
		if len(seen) == b.N {
			close(all)
		}
		mu.Unlock()
	}
	const q = `INSERT INTO outbox (event_id, merchant_id, topic, subject_id, sequence, payload)
		SELECT 'evt_bench' || i, $1, 'session.succeeded', 'subj' || (i % 1000), i / 1000 + 1,
			jsonb_build_object('id', 'evt_bench' || i, 'type', 'session.succeeded', 'sequence', i / 1000 + 1, 'data', jsonb_build_object('object', jsonb_build_object('id', 'subj' || (i % 1000))))
		FROM generate_series(0, $2 - 1) i`
	if _, err := bb.pg.Exec(bb.ctx, q, bb.merchant, b.N); err != nil {
		b.Fatal(err)
	}
	d := bb.dispatcher(func(c *Config) { c.Now = time.Now; c.Logger = nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.ResetTimer()
	start := time.Now()
	go func() { defer close(done); _ = d.Run(ctx) }()
	select {
	case <-all:
	case <-time.After(10 * time.Minute):
		b.Fatal("not all events arrived")
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}
