package e2e

import (
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
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

// setSecret is the endpoint's signing secret, as its creation returned it.
func (h *hookReceiver) setSecret(secret string) {
	h.mu.Lock()
	h.secret = secret
	h.mu.Unlock()
}

func (h *hookReceiver) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(h.srv.Certificate())
	return p
}

// of returns the events received so far about a session or payment (the
// object's sessionId, or a payment's id), in arrival order.
func (h *hookReceiver) of(subject string) []hookEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []hookEvent
	for _, ev := range h.events {
		var o struct {
			SessionID string `json:"sessionId"`
			ID        string `json:"id"`
		}
		if json.Unmarshal(ev.Data.Object, &o) == nil && (o.SessionID == subject || o.SessionID == "" && o.ID == subject) {
			out = append(out, ev)
		}
	}
	return out
}

// waitFor waits until the subject's events include one of type typ and
// returns them all.
func (h *hookReceiver) waitFor(t *testing.T, subject, typ string, within time.Duration) []hookEvent {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		evs := h.of(subject)
		for _, ev := range evs {
			if ev.Type == typ {
				return evs
			}
		}
		if time.Now().After(deadline) {
			h.mu.Lock()
			bad := h.bad
			h.mu.Unlock()
			t.Fatalf("no %s webhook for %s after %s; got %v; refused %v", typ, subject, within, evs, bad)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkEvents checks that evs are of the types want, in that order, with
// the sequences 1, 2, …, and that the last one's object is last (the
// object as GET returns it now).
func checkEvents(t *testing.T, evs []hookEvent, want []string, last map[string]any) {
	t.Helper()
	var got []string
	for i, ev := range evs {
		got = append(got, ev.Type)
		if ev.Sequence != int64(i+1) {
			t.Errorf("webhook %d (%s) has sequence %d, want %d: events arrive in order", i, ev.Type, ev.Sequence, i+1)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("webhooks %v, want %v", got, want)
	}
	var obj map[string]any
	if err := json.Unmarshal(evs[len(evs)-1].Data.Object, &obj); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(obj, last) {
		t.Errorf("%s carries\n%v\nGET returns\n%v", evs[len(evs)-1].Type, obj, last)
	}
}
