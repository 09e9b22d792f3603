package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
)

// The dispatcher against a local HTTPS receiver (loopback, httptest's
// CA) and the test Postgres, with production settings (25 ms poll, 32
// workers). Run with `make bench-webhook`.

// BenchmarkEventLatency is state change → received: a session created
// through the store (whose transaction writes its session.created event),
// one at a time at random moments, until the receiver has the event. That
// is the latency of a quiet system, where the poll interval dominates. The
// default poll and the former 100 ms one run side by side, so their ratio
// is of one run.
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
	st := store.New(bb.pg)
	var mu sync.Mutex
	arrived := map[string]time.Time{} // session id → when its event came
	got := make(chan string, 1)
	bb.rc.answer = func(n int, w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		var ev struct {
			Data struct {
				Object struct {
					SessionID string `json:"sessionId"`
				} `json:"object"`
			} `json:"data"`
		}
		if err := json.NewDecoder(bytes.NewReader(bb.rc.messages()[n].body)).Decode(&ev); err != nil {
			b.Error(err)
		}
		mu.Lock()
		arrived[ev.Data.Object.SessionID] = now
		mu.Unlock()
		got <- ev.Data.Object.SessionID
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
		ss := benchSession(bb.merchant, i)
		b.StartTimer()
		start := time.Now()
		if err := st.CreateSession(bb.ctx, ss, 6); err != nil {
			b.Fatal(err)
		}
		for r := <-got; r != ss.ID; r = <-got {
		}
		mu.Lock()
		lat = append(lat, arrived[ss.ID].Sub(start))
		mu.Unlock()
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
}

// benchSession is a Sessions API session as the API would create it.
func benchSession(merchantID string, i int) *session.Session {
	now := time.Now()
	return &session.Session{
		ID: fmt.Sprintf("%016x%016x", rand.Uint64(), i), MerchantID: merchantID, Status: session.RequiresPaymentMethod,
		Destination: session.Destination{Type: "evm", Address: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", ChainID: 8453,
			ChainName: "Base", TokenAddress: "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913", TokenSymbol: "USDC", AmountUnits: "1"},
		Display: session.Display{Title: "bench", Verb: "Deposit"}, ClientSecret: "s", CreatedAt: now, ExpiresAt: now.Add(time.Hour),
	}
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
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "events/s")
	// The ceiling, in the same run: the same signed POSTs through the
	// same guarded client to the same receiver, 16 at once (what one
	// endpoint gets from a dispatcher, twice PerEndpoint), with no
	// Postgres at all. The ratio is what claiming and recording cost.
	bb.rc.answer = nil
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for j := range jobs {
				if r := d.post(bb.ctx, j); r.err != "" {
					b.Error(r.err)
				}
			}
		})
	}
	start = time.Now()
	for i := range b.N {
		id := fmt.Sprintf("evt_ceiling%d", i)
		jobs <- job{eventID: id, url: bb.endpoint.URL, secrets: []string{bb.endpoint.Secret},
			body: fmt.Appendf(nil, `{"id":%q,"type":"session.succeeded","sequence":1,"data":{"object":{"id":"subj%d"}}}`, id, i%1000)}
	}
	close(jobs)
	wg.Wait()
	ceiling := float64(b.N) / time.Since(start).Seconds()
	b.ReportMetric(ceiling, "ceiling-events/s")
	b.ReportMetric(rate/ceiling, "ratio")
}
