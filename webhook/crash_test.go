package webhook

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The crash test runs the dispatcher in a child process (this test binary,
// re-executed with childEnv set) so it can be SIGKILLed for real.
const (
	childEnv   = "SETTLE_WEBHOOK_TEST_CHILD"
	childPGEnv = "SETTLE_WEBHOOK_TEST_CHILD_PG"
	childCAEnv = "SETTLE_WEBHOOK_TEST_CHILD_CA"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "child dispatcher:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild runs a dispatcher with short timeouts and leases (so a killed
// one's claims come back within the test) until it is killed.
func runChild() error {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv(childPGEnv))
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(os.Getenv(childCAEnv))
	if err != nil {
		return err
	}
	cas := x509.NewCertPool()
	if !cas.AppendCertsFromPEM(raw) {
		return fmt.Errorf("no certificate in %s", os.Getenv(childCAEnv))
	}
	d, err := NewDispatcher(Config{Postgres: pool, Policy: Policy{AllowLoopback: true}, RootCAs: cas,
		Timeout: 300 * time.Millisecond, Lease: 600 * time.Millisecond, PollInterval: 5 * time.Millisecond, Workers: 8,
		Backoff: Backoff{Min: 10 * time.Millisecond, Base: 20 * time.Millisecond, Cap: 200 * time.Millisecond}})
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// dedupe is a receiver's idempotent handling: effects keyed by webhook-id.
type dedupe struct {
	mu    sync.Mutex
	seen  map[string]int
	order map[string][]int64 // subject → sequences in first-seen order
}

// TestCrashSafety: dispatchers are SIGKILLed at random points while events
// flow; after a final run every event was delivered at least once, and the
// receiver's dedupe by webhook-id leaves exactly the set of events, each
// subject's first in sequence order.
func TestCrashSafety(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.rc.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	dd := &dedupe{seen: map[string]int{}, order: map[string][]int64{}}
	type meta struct {
		subject string
		seq     int64
	}
	var mu sync.Mutex
	events := map[string]meta{}
	b.rc.answer = func(n int, w http.ResponseWriter, r *http.Request) {
		// A little latency widens the window between POST and record,
		// where a kill makes a duplicate.
		time.Sleep(time.Duration(rand.IntN(5)) * time.Millisecond)
		if rand.IntN(10) == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		id := r.Header.Get("webhook-id")
		mu.Lock()
		m := events[id]
		mu.Unlock()
		dd.mu.Lock()
		if dd.seen[id] == 0 {
			dd.order[m.subject] = append(dd.order[m.subject], m.seq)
		}
		dd.seen[id]++
		dd.mu.Unlock()
	}

	// Producer: 10 subjects, their events in sequence, about 2 s in all.
	const subjects, perSubject = 10, 20
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for s := 1; s <= perSubject; s++ {
			for i := range subjects {
				subj := fmt.Sprintf("subj%02d", i)
				mu.Lock() // before the row exists, so the receiver knows it
				id := randomID("evt_")
				events[id] = meta{subj, int64(s)}
				mu.Unlock()
				payload := fmt.Sprintf(`{"id":%q,"type":"session.processing","sequence":%d}`, id, s)
				if _, err := b.pg.Exec(context.Background(), `INSERT INTO outbox (event_id, merchant_id, topic, subject_id, sequence, payload) VALUES ($1, $2, 'session.processing', $3, $4, $5)`,
					id, b.merchant, subj, s, payload); err != nil {
					t.Errorf("inserting event: %v", err)
					return
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	start := func() (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=1", childPGEnv+"="+b.pgURL, childCAEnv+"="+ca)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &out
	}
	kills := 0
	t0 := time.Now()
	deadline := time.Now().Add(4 * time.Second)
	for {
		// Two dispatchers at a time, killed independently.
		c1, _ := start()
		c2, _ := start()
		time.Sleep(time.Duration(50+rand.IntN(300)) * time.Millisecond)
		for _, c := range []*exec.Cmd{c1, c2} {
			_ = c.Process.Signal(syscall.SIGKILL)
			_ = c.Wait()
			kills++
		}
		select {
		case <-produced:
		default:
			if time.Now().Before(deadline) {
				continue
			}
		}
		break
	}
	<-produced
	t.Logf("%s: produced, %d kills", time.Since(t0), kills)
	final, out := start()
	defer func() {
		_ = final.Process.Signal(syscall.SIGKILL)
		_ = final.Wait()
	}()
	waitUntil := time.Now().Add(30 * time.Second)
	for {
		var left int
		if err := b.pg.QueryRow(b.ctx, `SELECT (SELECT count(*) FROM outbox WHERE delivered_at IS NULL) + (SELECT count(*) FROM webhook_deliveries WHERE status <> 'succeeded')`).Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			break
		}
		if time.Now().After(waitUntil) {
			t.Fatalf("%d events or deliveries left after the final run; child output:\n%s", left, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%s: all delivered", time.Since(t0))
	dd.mu.Lock()
	defer dd.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	if len(events) != subjects*perSubject {
		t.Fatalf("produced %d events", len(events))
	}
	dups := 0
	for id := range events {
		if dd.seen[id] == 0 {
			t.Errorf("event %s was never delivered", id)
		}
		dups += dd.seen[id] - 1
	}
	for id := range dd.seen {
		if _, ok := events[id]; !ok {
			t.Errorf("received unknown id %s", id)
		}
	}
	for subj, seqs := range dd.order {
		for i, s := range seqs {
			if s != int64(i+1) {
				t.Errorf("%s: first deliveries in order %v, want 1, 2, 3, …", subj, seqs)
				break
			}
		}
	}
	t.Logf("%d events, %d dispatcher kills, %d duplicate deliveries (deduped by webhook-id)", len(events), kills, dups)
}
