package e2e

import (
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// hookReceiver is a merchant's webhook endpoint: HTTPS on loopback
// (httptest's CA), every message checked with the Standard Webhooks
// reference verifier, deduplicated by webhook-id as a receiver should.
type hookReceiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	secret string
	seen   map[string]bool
	events []hookEvent
	bad    []string // messages that failed verification
}

type hookEvent struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Sequence int64  `json:"sequence"`
	Data     struct {
		Object json.RawMessage `json:"object"`
	} `json:"data"`
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{seen: map[string]bool{}}
	h.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		wh, err := standardwebhooks.NewWebhook(h.secret)
		if err == nil {
			err = wh.Verify(body, r.Header)
		}
		if err != nil {
			h.bad = append(h.bad, r.Header.Get("webhook-id")+": "+err.Error())
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var ev hookEvent
		if err := json.Unmarshal(body, &ev); err != nil || ev.ID != r.Header.Get("webhook-id") {
			h.bad = append(h.bad, r.Header.Get("webhook-id")+": body "+string(body))
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		if !h.seen[ev.ID] {
			h.seen[ev.ID] = true
			h.events = append(h.events, ev)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(h.srv.Certificate())
	return p
}

// of returns the events received so far whose object has the given
// sessionId, in arrival order.
func (h *hookReceiver) of(sessionID string) []hookEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []hookEvent
	for _, ev := range h.events {
		var o struct {
			SessionID string `json:"sessionId"`
		}
		if json.Unmarshal(ev.Data.Object, &o) == nil && o.SessionID == sessionID {
			out = append(out, ev)
		}
	}
	return out
}

// waitFor waits until the session's events include one of type typ and
// returns them all.
func (h *hookReceiver) waitFor(t *testing.T, sessionID, typ string, within time.Duration) []hookEvent {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		evs := h.of(sessionID)
		for _, ev := range evs {
			if ev.Type == typ {
				return evs
			}
		}
		if time.Now().After(deadline) {
			h.mu.Lock()
			bad := h.bad
			h.mu.Unlock()
			t.Fatalf("no %s webhook for session %s after %s; got %v; refused %v", typ, sessionID, within, evs, bad)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
