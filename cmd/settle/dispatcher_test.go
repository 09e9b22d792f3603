package main

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/settle-dev/settle/internal/dbtest"
	"github.com/settle-dev/settle/internal/store"
)

// lockedBuilder is stdout shared by the receiver's handler and the test.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDevWebhookReceiver: settle dev's dispatcher and receiver together
// print an event of the demo merchant as it arrives, with a verified
// signature, through the one endpoint registered for it.
func TestDevWebhookReceiver(t *testing.T) {
	db := dbtest.Migrated(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	st := store.New(db.PG)
	m, err := st.CreateMerchant(ctx, "Demo")
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := st.CreateAPIKey(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &fileConfig{}
	cfg.Webhooks.AllowLoopback = true
	cfg.Dev.WebhookListen = "127.0.0.1:0"
	out := &lockedBuilder{}
	logger := slog.New(slog.DiscardHandler)
	g, gctx := errgroup.WithContext(ctx)
	if err := devWebhookGroup(gctx, g, cfg, db.PG, key, out, logger); err != nil {
		t.Fatal(err)
	}
	if err := dispatcherGroup(gctx, g, cfg, db.PG, logger, newRegistry()); err != nil {
		t.Fatal(err)
	}
	const q = `INSERT INTO outbox (event_id, merchant_id, topic, subject_id, sequence, payload)
		VALUES ('evt_devtest', $1, 'session.succeeded', 'abc123', 4,
			'{"id":"evt_devtest","type":"session.succeeded","sequence":4,"createdAt":"1","isTestEvent":false,"data":{"object":{"sessionId":"abc123"}}}')`
	if _, err := db.PG.Exec(ctx, q, m.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "evt_devtest") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	var line string
	for l := range strings.Lines(out.String()) {
		if strings.Contains(l, "evt_devtest") {
			line = l
		}
	}
	for _, want := range []string{"session.succeeded", "abc123", "seq 4", "signature ok"} {
		if !strings.Contains(line, want) {
			t.Errorf("console line %q lacks %q; all output:\n%s", line, want, out)
		}
	}
	var n int
	if err := db.PG.QueryRow(t.Context(), `SELECT count(*) FROM webhook_endpoints WHERE merchant_id = $1`, m.ID).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d endpoints, %v", n, err)
	}
}

func TestDescribeEvent(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"id":"evt_1","type":"payment_completed","sequence":2,"data":{"object":{"id":"PAY1"}}}`, "payment_completed"},
		{`{"id":"evt_2","type":"webhook.test","sequence":1,"isTestEvent":true,"data":{"object":{"id":"we_1"}}}`, "(test)"},
		{`not json`, "not an event body"},
	} {
		if got := describeEvent([]byte(tc.body), "signature ok"); !strings.Contains(got, tc.want) {
			t.Errorf("describeEvent(%s) = %q, want it to contain %q", tc.body, got, tc.want)
		}
	}
}
