package webhook

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/internal/store"
	"github.com/settle-dev/settle/schema"
)

// fakeClock is the dispatcher's clock in tests: it moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now().UTC().Truncate(time.Second)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testWriter sends log lines to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// received is one message a receiver got.
type received struct {
	id, sig string
	body    []byte
	header  http.Header
	err     error // the reference verifier's verdict
}

// receiver is a real HTTPS endpoint (loopback, httptest's CA) that checks
// every message with the library's reference verifier.
type receiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	// secrets are the endpoints' (a message verifies if one of them
	// verifies it).
	secrets []string
	got     []received
	// answer decides the response to the n-th message (0-based); nil is 200.
	answer func(n int, w http.ResponseWriter, r *http.Request)
}

func newReceiver(t testing.TB) *receiver {
	rc := &receiver{}
	rc.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		n := len(rc.got)
		rc.got = append(rc.got, received{id: r.Header.Get("webhook-id"), sig: r.Header.Get("webhook-signature"), body: body,
			header: r.Header.Clone(), err: rc.verify(body, r.Header)})
		answer := rc.answer
		rc.mu.Unlock()
		if answer != nil {
			answer(n, w, r)
		}
	}))
	// Killed dispatchers leave half-done handshakes; they are expected.
	rc.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	rc.srv.StartTLS()
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) URL() string { return rc.srv.URL + "/hook" }

func (rc *receiver) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(rc.srv.Certificate())
	return p
}

func (rc *receiver) messages() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

func (rc *receiver) addSecret(s string) {
	rc.mu.Lock()
	rc.secrets = append(rc.secrets, s)
	rc.mu.Unlock()
}

// verify runs with rc.mu held.
func (rc *receiver) verify(body []byte, h http.Header) error {
	err := errors.New("no secret")
	for _, s := range rc.secrets {
		if err = Verify(s, body, h); err == nil {
			return nil
		}
	}
	return err
}

// bundle is a migrated database with a merchant, a receiver and its
// endpoint.
type bundle struct {
	t        testing.TB
	ctx      context.Context
	pg       *pgxpool.Pool
	pgURL    string
	st       *Store
	clock    *fakeClock
	merchant string
	rc       *receiver
	endpoint *Endpoint
}

func setup(t testing.TB) *bundle {
	t.Helper()
	// Postgres only: webhooks never touch ClickHouse.
	url := dbtest.PostgresURL(t)
	pg := dbtest.OpenPostgres(t, url)
	if _, err := schema.Migrate(t.Context(), pg, nil, nil); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	b := &bundle{t: t, ctx: t.Context(), pg: pg, pgURL: url, clock: newFakeClock(), rc: newReceiver(t)}
	b.st = NewStore(pg, Policy{AllowLoopback: true})
	b.st.now = b.clock.Now
	m, err := store.New(pg).CreateMerchant(b.ctx, "Webhook Test")
	if err != nil {
		t.Fatal(err)
	}
	b.merchant = m.ID
	b.endpoint = b.addEndpoint(b.rc.URL())
	return b
}

func (b *bundle) addEndpoint(url string, events ...string) *Endpoint {
	b.t.Helper()
	e, err := b.st.CreateEndpoint(b.ctx, b.merchant, url, events, "")
	if err != nil {
		b.t.Fatal(err)
	}
	b.rc.addSecret(e.Secret)
	return e
}

// dispatcher builds a dispatcher on the fake clock that trusts the
// receiver's CA; mod adjusts the config.
func (b *bundle) dispatcher(mod func(*Config)) *Dispatcher {
	b.t.Helper()
	cfg := Config{Postgres: b.pg, Policy: Policy{AllowLoopback: true}, RootCAs: b.rc.pool(), Now: b.clock.Now, Timeout: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(testWriter{b.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if mod != nil {
		mod(&cfg)
	}
	d, err := NewDispatcher(cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	return d
}

// event writes an outbox row as the event log does and returns its id.
func (b *bundle) event(subject string, seq int64, topic string) string {
	b.t.Helper()
	return insertEvent(b.t, b.ctx, b.pg, b.merchant, subject, seq, topic)
}

func insertEvent(t testing.TB, ctx context.Context, pg *pgxpool.Pool, merchant, subject string, seq int64, topic string) string {
	id := randomID("evt_")
	payload := fmt.Sprintf(`{"id":%q,"type":%q,"sequence":%d,"createdAt":"%d","isTestEvent":false,"data":{"object":{"id":%q}}}`,
		id, topic, seq, time.Now().Unix(), subject)
	const q = `INSERT INTO outbox (event_id, merchant_id, topic, subject_id, sequence, payload) VALUES ($1, $2, $3, $4, $5, $6)`
	if _, err := pg.Exec(ctx, q, id, merchant, topic, subject, seq, payload); err != nil {
		t.Fatalf("inserting event: %v", err)
	}
	return id
}

// step runs one dispatcher step and returns how many deliveries it tried.
func (b *bundle) step(d *Dispatcher) int {
	b.t.Helper()
	n, err := d.runOnce(b.ctx, 100)
	if err != nil {
		b.t.Fatal(err)
	}
	return n
}

// delivery reads a delivery's status and attempts.
func (b *bundle) delivery(eventID, endpointID string) (status string, attempts int) {
	b.t.Helper()
	err := b.pg.QueryRow(b.ctx, `SELECT status, attempts FROM webhook_deliveries WHERE event_id = $1 AND endpoint_id = $2`, eventID, endpointID).Scan(&status, &attempts)
	if err != nil {
		b.t.Fatalf("reading delivery of %s: %v", eventID, err)
	}
	return status, attempts
}
