package webhook

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

func TestDeliverSignedEvent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d := b.dispatcher(nil)
	filtered := b.addEndpoint(b.rc.URL()+"?only=succeeded", "session.succeeded")
	id := b.event("sess1", 1, "session.processing")
	if n := b.step(d); n != 1 {
		t.Fatalf("step tried %d deliveries, want 1 (the filtered endpoint does not take session.processing)", n)
	}
	got := b.rc.messages()
	if len(got) != 1 {
		t.Fatalf("receiver got %d messages, want 1", len(got))
	}
	m := got[0]
	if m.err != nil {
		t.Fatalf("reference verifier refused the message: %v", m.err)
	}
	if m.id != id {
		t.Errorf("webhook-id %q, want the event id %q", m.id, id)
	}
	var payload string
	if err := b.pg.QueryRow(b.ctx, `SELECT payload::text FROM outbox WHERE event_id = $1`, id).Scan(&payload); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.body, []byte(payload)) {
		t.Errorf("body %s, want the outbox payload %s", m.body, payload)
	}
	if !strings.HasPrefix(m.sig, "v1,") || strings.Contains(m.sig, " ") {
		t.Errorf("webhook-signature %q: want one v1 signature", m.sig)
	}
	if ct := m.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	// Another secret must not verify it: the check above can fail.
	if err := Verify(NewSecret(), m.body, m.header); err == nil {
		t.Error("a message verified under an unrelated secret")
	}
	if st, n := b.delivery(id, b.endpoint.ID); st != "succeeded" || n != 1 {
		t.Errorf("delivery %s after %d attempts, want succeeded after 1", st, n)
	}
	var delivered bool
	if err := b.pg.QueryRow(b.ctx, `SELECT delivered_at IS NOT NULL FROM outbox WHERE event_id = $1`, id).Scan(&delivered); err != nil || !delivered {
		t.Errorf("outbox row not marked fanned out: %v %v", delivered, err)
	}
	var rows int
	if err := b.pg.QueryRow(b.ctx, `SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1`, filtered.ID).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("the filtered endpoint got %d deliveries (%v), want 0", rows, err)
	}
	atts, err := b.st.ListAttempts(b.ctx, b.merchant, b.endpoint.ID, 10, 0)
	if err != nil || len(atts) != 1 || atts[0].StatusCode != 200 || atts[0].EventID != id || atts[0].EventType != "session.processing" {
		t.Errorf("attempts %+v, %v", atts, err)
	}
	// A second step sends nothing: the delivery is done.
	if n := b.step(d); n != 0 {
		t.Errorf("second step tried %d deliveries", n)
	}
}

func TestRotatedSecretSignsWithBoth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d := b.dispatcher(nil)
	old := b.endpoint.Secret
	e, err := b.st.RotateSecret(b.ctx, b.merchant, b.endpoint.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e.Secret == old || !strings.HasPrefix(e.Secret, SecretPrefix) {
		t.Fatalf("rotated secret %q", e.Secret)
	}
	b.event("sess1", 1, "session.processing")
	b.step(d)
	m := b.rc.messages()[0]
	if n := len(strings.Split(m.sig, " ")); n != 2 {
		t.Fatalf("during the rotation window %d signatures, want 2: %q", n, m.sig)
	}
	for name, s := range map[string]string{"old": old, "new": e.Secret} {
		if err := Verify(s, m.body, m.header); err != nil {
			t.Errorf("the %s secret does not verify during rotation: %v", name, err)
		}
	}
	b.clock.Advance(RotationOverlap + time.Second)
	b.event("sess1", 2, "session.succeeded")
	b.step(d)
	m = b.rc.messages()[1]
	if err := Verify(old, m.body, m.header); err == nil {
		t.Error("the old secret still verifies after the rotation window")
	}
	if err := Verify(e.Secret, m.body, m.header); err != nil {
		t.Errorf("the new secret does not verify: %v", err)
	}
}

// TestRetriesAcrossFailures: a 5xx, a timeout and a connection reset are
// each retried after a backoff (on the fake clock), then a 2xx ends it.
func TestRetriesAcrossFailures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d := b.dispatcher(func(c *Config) { c.Timeout = 300 * time.Millisecond })
	b.rc.answer = func(n int, w http.ResponseWriter, r *http.Request) {
		switch n {
		case 0:
			w.WriteHeader(http.StatusServiceUnavailable)
		case 1:
			time.Sleep(time.Second) // past the dispatcher's timeout
		case 2:
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close() // reset: no response at all
			}
		}
	}
	id := b.event("sess1", 1, "session.processing")
	for i := range 3 {
		if n := b.step(d); n != 1 {
			t.Fatalf("attempt %d: step tried %d", i+1, n)
		}
		if st, n := b.delivery(id, b.endpoint.ID); st != "pending" || n != i+1 {
			t.Fatalf("after failure %d: %s, %d attempts", i+1, st, n)
		}
		// Not due again before its backoff.
		if n := b.step(d); n != 0 {
			t.Fatalf("retried at once after failure %d", i+1)
		}
		b.clock.Advance(d.cfg.Backoff.Ceiling(i + 1))
	}
	if n := b.step(d); n != 1 {
		t.Fatalf("fourth attempt: step tried %d", n)
	}
	if st, n := b.delivery(id, b.endpoint.ID); st != "succeeded" || n != 4 {
		t.Fatalf("after the 2xx: %s, %d attempts", st, n)
	}
	atts, err := b.st.ListAttempts(b.ctx, b.merchant, b.endpoint.ID, 10, 0)
	if err != nil || len(atts) != 4 {
		t.Fatalf("attempts %+v, %v", atts, err)
	}
	// Newest first: 200, reset, timeout, 503.
	if atts[0].StatusCode != 200 || atts[3].StatusCode != 503 {
		t.Errorf("status codes %d … %d", atts[0].StatusCode, atts[3].StatusCode)
	}
	for _, a := range atts[1:3] {
		if a.StatusCode != 0 || a.Error == "" {
			t.Errorf("timeout/reset attempt %+v: want no status and an error", a)
		}
	}
	if !strings.Contains(strings.ToLower(atts[2].Error), "timeout") && !strings.Contains(atts[2].Error, "deadline") {
		t.Errorf("timeout attempt error %q", atts[2].Error)
	}
	// Every try carried the same webhook-id.
	for _, m := range b.rc.messages() {
		if m.id != id || m.err != nil {
			t.Errorf("message id %q (want %q), verify: %v", m.id, id, m.err)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	bo := DefaultBackoff
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{1, 10 * time.Second}, {2, 20 * time.Second}, {3, 40 * time.Second}, {12, 20480 * time.Second}, {13, 6 * time.Hour}, {60, 6 * time.Hour}, {1000, 6 * time.Hour}} {
		if got := bo.Ceiling(tc.n); got != tc.want {
			t.Errorf("Ceiling(%d) = %s, want %s", tc.n, got, tc.want)
		}
		lo, hi := bo.Delay(tc.n, 0), bo.Delay(tc.n, 0.999999)
		if lo != bo.Min || hi > tc.want || hi < tc.want*99/100 {
			t.Errorf("Delay(%d) spans [%s, %s], want [%s, %s]", tc.n, lo, hi, bo.Min, tc.want)
		}
	}
	// Even with the longest draws, attempts keep coming until the window
	// ends: the schedule never runs out before three days.
	var elapsed time.Duration
	n := 0
	for elapsed < bo.RetryWindow {
		n++
		elapsed += bo.Delay(n, 0.999999)
	}
	if n < 15 || n > 40 {
		t.Errorf("%d attempts in the retry window with maximal delays", n)
	}
}

// TestOrderPerSubject: a later event of a subject waits while an earlier
// one is pending to the same endpoint; other subjects do not wait.
func TestOrderPerSubject(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d := b.dispatcher(nil)
	a1 := b.event("A", 1, "session.processing")
	b.rc.answer = func(n int, w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("webhook-id") == a1 && n == 0 {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}
	b.step(d) // a1 fails once
	a2 := b.event("A", 2, "session.succeeded")
	b1 := b.event("B", 1, "session.processing")
	if n := b.step(d); n != 1 {
		t.Fatalf("step tried %d, want 1 (B's event; A's second waits)", n)
	}
	if st, _ := b.delivery(a2, b.endpoint.ID); st != "pending" {
		t.Fatalf("a2 %s", st)
	}
	if st, _ := b.delivery(b1, b.endpoint.ID); st != "succeeded" {
		t.Fatalf("b1 %s", st)
	}
	// a2 is due but blocked, however long we wait, until a1 is through.
	var a2attempts int
	b.pg.QueryRow(b.ctx, `SELECT attempts FROM webhook_deliveries WHERE event_id = $1`, a2).Scan(&a2attempts)
	if a2attempts != 0 {
		t.Fatalf("a2 was attempted before a1 succeeded")
	}
	b.clock.Advance(d.cfg.Backoff.Ceiling(1))
	if n := b.step(d); n != 1 {
		t.Fatalf("step tried %d, want 1 (a1 only)", n)
	}
	if n := b.step(d); n != 1 {
		t.Fatalf("step tried %d, want 1 (a2, now unblocked)", n)
	}
	var order []string
	for _, m := range b.rc.messages() {
		order = append(order, m.id)
	}
	want := []string{a1, b1, a1, a2}
	if strings.Join(order, ",") != strings.Join(want, ",") {
		t.Errorf("delivery order %v, want %v", order, want)
	}
}

// TestDisableAfterRetryWindow: an endpoint that answers 500 through the
// whole window gets its delivery failed and is disabled with a reason; a
// later event of the same subject is then no longer blocked (it fails with
// the endpoint). An endpoint that succeeded meanwhile is not disabled.
func TestDisableAfterRetryWindow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d := b.dispatcher(nil)
	healthy := b.addEndpoint(b.rc.URL() + "?healthy=1")
	b.rc.answer = func(n int, w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery == "" {
			w.WriteHeader(http.StatusBadGateway)
		} else if r.Header.Get("webhook-id") != "" && n%2 == 0 {
			w.WriteHeader(http.StatusBadGateway) // fails often, but not always
		}
	}
	first := b.event("A", 1, "session.processing")
	second := b.event("A", 2, "session.succeeded")
	start := b.clock.Now()
	for i := 0; ; i++ {
		if i > 200 {
			t.Fatal("the delivery never gave up")
		}
		b.step(d)
		if st, _ := b.delivery(first, b.endpoint.ID); st != "pending" {
			break
		}
		b.clock.Advance(d.cfg.Backoff.Cap)
	}
	if elapsed := b.clock.Now().Sub(start); elapsed < DefaultBackoff.RetryWindow {
		t.Errorf("gave up after %s, before the %s window", elapsed, DefaultBackoff.RetryWindow)
	}
	if st, _ := b.delivery(first, b.endpoint.ID); st != "failed" {
		t.Errorf("first delivery %s, want failed", st)
	}
	if st, _ := b.delivery(second, b.endpoint.ID); st != "failed" {
		t.Errorf("second delivery %s, want failed with the disabled endpoint", st)
	}
	e, err := b.st.GetEndpoint(b.ctx, b.merchant, b.endpoint.ID)
	if err != nil || e.Enabled || !strings.Contains(e.DisabledReason, "HTTP 502") {
		t.Errorf("endpoint after the window: %+v, %v", e, err)
	}
	h, err := b.st.GetEndpoint(b.ctx, b.merchant, healthy.ID)
	if err != nil || !h.Enabled {
		t.Errorf("an endpoint with successes was disabled: %+v, %v", h, err)
	}
	// A disabled endpoint gets no new deliveries.
	third := b.event("C", 1, "session.processing")
	b.step(d)
	var n int
	b.pg.QueryRow(b.ctx, `SELECT count(*) FROM webhook_deliveries WHERE event_id = $1 AND endpoint_id = $2`, third, b.endpoint.ID).Scan(&n)
	if n != 0 {
		t.Errorf("a disabled endpoint got a new delivery")
	}
	// Enabled again, it gets the next event.
	if e, err := b.st.EnableEndpoint(b.ctx, b.merchant, b.endpoint.ID); err != nil || !e.Enabled || e.DisabledReason != "" {
		t.Fatalf("enable: %+v, %v", e, err)
	}
	b.rc.answer = nil
	fourth := b.event("C", 2, "session.succeeded")
	b.step(d)
	if st, _ := b.delivery(fourth, b.endpoint.ID); st != "succeeded" {
		t.Errorf("after enabling: %s", st)
	}
}

// TestConcurrentTestEvents: test events of one endpoint sent at once get
// the sequences 1..n, each once, the body's sequence the row's.
func TestConcurrentTestEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 12
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := b.st.SendTest(b.ctx, b.merchant, b.endpoint.ID)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	rows, err := b.pg.Query(b.ctx, `SELECT o.sequence, (o.payload->>'sequence')::bigint, o.is_test, o.delivered_at IS NOT NULL, o.payload->>'type',
			(SELECT count(*) FROM webhook_deliveries d WHERE d.outbox_id = o.id AND d.endpoint_id = $1)
		FROM outbox o WHERE o.subject_id = $1 ORDER BY o.sequence`, b.endpoint.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	want := int64(1)
	for rows.Next() {
		var seq, bodySeq, deliveries int64
		var isTest, fannedOut bool
		var typ string
		if err := rows.Scan(&seq, &bodySeq, &isTest, &fannedOut, &typ, &deliveries); err != nil {
			t.Fatal(err)
		}
		if seq != want || bodySeq != seq || !isTest || !fannedOut || typ != TestEventType || deliveries != 1 {
			t.Errorf("test event %d: sequence %d, body %d, test %v, fanned out %v, type %q, %d deliveries", want, seq, bodySeq, isTest, fannedOut, typ, deliveries)
		}
		want++
	}
	if err := rows.Err(); err != nil || want != n+1 {
		t.Errorf("%d test events, want %d (%v)", want-1, n, err)
	}
}

// TestTestEventAndReplay: the test event goes to its endpoint only, with
// isTestEvent; a replay sends an event again with the same webhook-id.
func TestTestEventAndReplay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d := b.dispatcher(nil)
	other := b.addEndpoint(b.rc.URL() + "?other=1")
	id, err := b.st.SendTest(b.ctx, b.merchant, b.endpoint.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := b.step(d); n != 1 {
		t.Fatalf("test event: %d deliveries, want 1 (its endpoint only)", n)
	}
	m := b.rc.messages()[0]
	if m.id != id || m.err != nil || !bytes.Contains(m.body, []byte(`"isTestEvent": true`)) || !bytes.Contains(m.body, []byte(TestEventType)) {
		t.Errorf("test message %s %s: %v", m.id, m.body, m.err)
	}
	ev := b.event("A", 1, "session.succeeded")
	if n := b.step(d); n != 2 {
		t.Fatalf("event: %d deliveries, want 2", n)
	}
	if n, err := b.st.Replay(b.ctx, b.merchant, ev, other.ID); err != nil || n != 1 {
		t.Fatalf("replay to one endpoint: %d, %v", n, err)
	}
	if n := b.step(d); n != 1 {
		t.Fatalf("replay: %d deliveries, want 1", n)
	}
	if n, err := b.st.Replay(b.ctx, b.merchant, ev, ""); err != nil || n != 2 {
		t.Fatalf("replay to all: %d, %v", n, err)
	}
	if n := b.step(d); n != 2 {
		t.Fatalf("replay to all: %d deliveries, want 2", n)
	}
	msgs := b.rc.messages()
	for _, m := range msgs[1:] {
		if m.id != ev {
			t.Errorf("replayed message id %q, want %q", m.id, ev)
		}
	}
	if n, err := b.st.Replay(b.ctx, b.merchant, id, ""); err != nil || n != 1 {
		t.Errorf("replaying the test event to all: %d deliveries, %v; want 1 (its own endpoint)", n, err)
	}
	if _, err := b.st.Replay(b.ctx, "mer_other", ev, ""); err != ErrNotFound {
		t.Errorf("another merchant's replay: %v, want ErrNotFound", err)
	}
	_ = standardwebhooks.HeaderWebhookID
}

// TestTwoDispatchersNeverDoubleClaim: two dispatchers on one database
// share the work without sending any delivery twice (a live lease is never
// taken over; SKIP LOCKED keeps claims apart).
func TestTwoDispatchersNeverDoubleClaim(t *testing.T) {
	t.Parallel()
	b := setup(t)
	second := b.addEndpoint(b.rc.URL() + "?second=1")
	var ids []string
	for s := range 20 {
		for seq := 1; seq <= 10; seq++ {
			ids = append(ids, b.event(fmt.Sprintf("subj%d", s), int64(seq), "session.processing"))
		}
	}
	ctx, cancel := context.WithCancel(b.ctx)
	var wg sync.WaitGroup
	for range 2 {
		d := b.dispatcher(func(c *Config) { c.Now = time.Now; c.PollInterval = 5 * time.Millisecond; c.Workers = 8 })
		wg.Go(func() {
			if err := d.Run(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	want := 2 * len(ids)
	deadline := time.Now().Add(20 * time.Second)
	for len(b.rc.messages()) < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a double send would arrive now
	cancel()
	wg.Wait()
	for _, m := range b.rc.messages() {
		if m.err != nil {
			t.Errorf("verify: %v", m.err)
		}
	}
	for _, id := range ids {
		for _, e := range []*Endpoint{b.endpoint, second} {
			if st, n := b.delivery(id, e.ID); st != "succeeded" || n != 1 {
				t.Errorf("%s to %s: %s after %d attempts, want succeeded after exactly 1", id, e.ID, st, n)
			}
		}
	}
	if got := len(b.rc.messages()); got != want {
		t.Errorf("receiver got %d messages, want exactly %d", got, want)
	}
}

// TestDeleteDuringAttempt: an endpoint deleted while its POST is in flight
// leaves nothing to record, and no error.
func TestDeleteDuringAttempt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var logs strings.Builder
	var mu sync.Mutex
	d := b.dispatcher(func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	})
	b.rc.answer = func(n int, w http.ResponseWriter, r *http.Request) {
		if err := b.st.DeleteEndpoint(context.Background(), b.merchant, b.endpoint.ID); err != nil {
			t.Error(err)
		}
	}
	b.event("A", 1, "session.processing")
	b.step(d)
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(logs.String(), "recording webhook attempt failed") {
		t.Errorf("recording failed: %s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestSlowEndpointDoesNotStarveOthers: an endpoint with a backlog of slow
// answers gets about PerEndpoint workers, and another endpoint's event
// goes meanwhile.
func TestSlowEndpointDoesNotStarveOthers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.addEndpoint(b.rc.URL()+"?slow=1", "session.processing")
	b.addEndpoint(b.rc.URL()+"?fast=1", "session.succeeded")
	if err := b.st.DeleteEndpoint(b.ctx, b.merchant, b.endpoint.ID); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var cur, peak int
	fastAt := make(chan time.Time, 1)
	b.rc.answer = func(n int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("fast") {
			fastAt <- time.Now()
			return
		}
		mu.Lock()
		cur++
		peak = max(peak, cur)
		mu.Unlock()
		time.Sleep(600 * time.Millisecond)
		mu.Lock()
		cur--
		mu.Unlock()
	}
	for i := range 24 {
		b.event(fmt.Sprintf("s%d", i), 1, "session.processing")
	}
	b.event("f", 1, "session.succeeded")
	d := b.dispatcher(func(c *Config) {
		c.Now = time.Now
		c.Workers = 8
		c.PerEndpoint = 2
		c.PollInterval = 5 * time.Millisecond
	})
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() { defer close(done); _ = d.Run(ctx) }()
	select {
	case at := <-fastAt:
		// Before the slow endpoint's first answers: without the cap it
		// would wait for three rounds of them.
		if el := at.Sub(start); el > 550*time.Millisecond {
			t.Errorf("the fast endpoint waited %s behind the slow one", el)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the fast endpoint's event never came")
	}
	time.Sleep(700 * time.Millisecond) // a second round of the slow endpoint
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if peak > 3 || peak < 2 {
		t.Errorf("the slow endpoint had %d POSTs at once, want 2 or 3 (PerEndpoint 2)", peak)
	}
}
