package api_test

import (
	"context"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/settle-dev/settle/api"
	"github.com/settle-dev/settle/internal/chain"
	"github.com/settle-dev/settle/internal/store"
	"github.com/settle-dev/settle/reconciler"
)

func withEvents(c *api.Config) { c.Events = c.Store.(*store.Store) }

// eventPages pages through GET /v1/events (with query) and returns every
// event, checking the list envelope on the way.
func (b *bundle) eventPages(t *testing.T, query string, limit int, header []string) []map[string]any {
	t.Helper()
	var out []map[string]any
	cursor := ""
	for pages := 0; pages < 100; pages++ {
		p := fmt.Sprintf("/v1/events?limit=%d%s", limit, query)
		if cursor != "" {
			p += "&starting_after=" + url.QueryEscape(cursor)
		}
		r := b.do("GET", p, nil, header...)
		if r.Status != http.StatusOK || len(r.Body) != 3 {
			t.Fatalf("GET %s: %d %s", p, r.Status, r.Raw)
		}
		data := r.Body["data"].([]any)
		for _, o := range data {
			out = append(out, o.(map[string]any))
		}
		next, _ := r.Body["nextCursor"].(string)
		if more := r.Body["hasMore"].(bool); more != (next != "") || more && len(data) != limit {
			t.Fatalf("GET %s: hasMore %v, nextCursor %q, %d objects", p, more, next, len(data))
		}
		if next == "" {
			return out
		}
		if last := data[len(data)-1].(map[string]any)["id"]; next != last {
			t.Fatalf("nextCursor %s is not the last event's id %v", next, last)
		}
		cursor = next
	}
	t.Fatal("paging does not end")
	return nil
}

// latest is the newest event of a subject, through the API.
func (b *bundle) latest(t *testing.T, subject string, header []string) map[string]any {
	t.Helper()
	r := b.do("GET", "/v1/events?limit=1&subject="+url.QueryEscape(subject), nil, header...)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /v1/events: %d %s", r.Status, r.Raw)
	}
	data := r.Body["data"].([]any)
	if len(data) != 1 {
		t.Fatalf("no event of %s", subject)
	}
	return data[0].(map[string]any)
}

func dataOf(e map[string]any, key string) any { return e["data"].(map[string]any)[key] }

// Each change's event carries the object exactly as the API's GET returns
// it right after that change: compared here against the handlers' JSON,
// for both APIs and for a deposit exception.
func TestEventObjectsAreWhatGETReturns(t *testing.T) {
	b := setup(t, withEvents)
	ctx := context.Background()
	auth := b.bearer(b.key)
	id, secret := b.create(b.key)
	get := func() any { return b.do("GET", "/v1/sessions/"+id, nil, auth...).Body["session"] }

	check := func(typ string, seq float64, key string, want any) map[string]any {
		t.Helper()
		e := b.latest(t, id, auth)
		if e["type"] != typ || e["sequence"] != seq || e["isTestEvent"] != false {
			t.Fatalf("latest event %v %v, want %s %v", e["type"], e["sequence"], typ, seq)
		}
		if got := dataOf(e, key); !reflect.DeepEqual(got, want) {
			t.Errorf("%s data.%s\n%v\nwant (GET)\n%v", typ, key, got, want)
		}
		return e
	}
	created := check(store.EventSessionCreated, 1, "object", get())
	if s := dataOf(created, "object").(map[string]any); s["clientSecret"] != secret || s["metadata"] == nil {
		t.Errorf("session.created object lacks what the API key sees: %v", s)
	}

	pm := b.do("POST", "/v1/sessions/"+id+"/paymentMethods", map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "evm"}})
	if pm.Status != 200 {
		t.Fatalf("payment method: %d %s", pm.Status, pm.Raw)
	}
	check(store.EventSessionWaitingPayment, 2, "object", get())
	receiver := pm.Body["session"].(map[string]any)["paymentMethod"].(map[string]any)["receiverAddress"].(string)

	reg, err := chain.NewRegistry([]chain.Chain{{ID: 8453, Name: "Base", Family: chain.FamilyEVM, Tokens: []chain.Token{{Symbol: "USDC", Address: baseUSDC, Decimals: 6}}}})
	if err != nil {
		t.Fatal(err)
	}
	base, _ := reg.Chain(8453)
	rec, err := reconciler.New(reconciler.Config{Chains: reg, Postgres: b.db.PG, ClickHouse: b.db.CH, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	deposit := func(sessionID, to, token string, units int64, n int) {
		t.Helper()
		var rc reconciler.Receiver
		if err := b.db.PG.QueryRow(ctx, `SELECT id, session_id FROM receivers WHERE address = lower($1)`, to).Scan(&rc.ID, &rc.SessionID); err != nil {
			t.Fatal(err)
		}
		tr := &reconciler.Transfer{ChainID: 8453, BlockNumber: uint64(n), BlockHash: fmt.Sprintf("0x%064x", n), BlockTime: time.Unix(0, b.now.Load()),
			TxHash: fmt.Sprintf("0x%064x", 1000+n), Token: strings.ToLower(token), From: "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
			To: strings.ToLower(to), Amount: big.NewInt(units)}
		if err := rec.ApplyDeposit(ctx, base, tr, rc); err != nil {
			t.Fatal(err)
		}
	}
	deposit(id, receiver, baseUSDC, 10_000_000, 1)
	check(store.EventSessionProcessing, 3, "object", get())

	const stray = "0x00000000000000000000000000000000000000e1"
	deposit(id, receiver, stray, 1_500_000, 2)
	e := check(store.EventDepositException, 4, "session", get())
	exc := dataOf(e, "object").(map[string]any)
	if exc["reason"] != "wrong_token" || exc["status"] != "open" || exc["sessionId"] != id || exc["amountRaw"] != "1500000" || exc["paymentId"] != nil {
		t.Errorf("deposit.exception object %v", exc)
	}

	// GET /v1/events/{id} is the same body.
	one := b.do("GET", "/v1/events/"+e["id"].(string), nil, auth...)
	if one.Status != 200 || !reflect.DeepEqual(one.Body, e) {
		t.Errorf("GET /v1/events/{id}: %d\n%v\nwant\n%v", one.Status, one.Body, e)
	}

	// A payment: nothing on create or payment method (the Payments API
	// has no type for them), payment_started on the deposit, its object
	// what GET /api/payment/{id} returns; listable with the Api-Key header.
	created2 := b.do("POST", "/api/payment", validPayment(), b.apiKey(b.key)...)
	if created2.Status != 200 {
		t.Fatalf("create payment: %d %s", created2.Status, created2.Raw)
	}
	paymentID := created2.Body["id"].(string)
	var sid string
	if err := b.db.PG.QueryRow(ctx, `SELECT id FROM sessions WHERE payment_id = $1`, paymentID).Scan(&sid); err != nil {
		t.Fatal(err)
	}
	_, r, err := b.store.SetReceiverPaymentMethod(ctx, sid, "evm", "evm", func(i uint32) (string, error) {
		a, err := b.xpub.Address(i)
		return strings.ToLower(a.Hex()), err
	}, time.Unix(0, b.now.Load()))
	if err != nil {
		t.Fatal(err)
	}
	if evs := b.eventPages(t, "&subject="+paymentID, 10, b.apiKey(b.key)); len(evs) != 0 {
		t.Fatalf("payment events before any deposit: %v", evs)
	}
	deposit(sid, r.Address, baseUSDC, 1_000_000, 3)
	pe := b.latest(t, paymentID, b.apiKey(b.key))
	wantPayment := b.do("GET", "/api/payment/"+paymentID, nil, b.apiKey(b.key)...).Body
	if pe["type"] != store.EventPaymentStarted || pe["sequence"] != float64(1) || !reflect.DeepEqual(dataOf(pe, "object"), wantPayment) {
		t.Errorf("payment event %v %v\n%v\nwant (GET)\n%v", pe["type"], pe["sequence"], dataOf(pe, "object"), wantPayment)
	}
}

// GET /v1/events pages newest first with the shared envelope, filters by
// type and subject, and shows a merchant only its own events.
func TestEventsList(t *testing.T) {
	b := setup(t, withEvents)
	auth := b.bearer(b.key)
	var ids []string
	for range 5 {
		id, _ := b.create(b.key)
		ids = append(ids, id)
		b.advance(1e9)
	}
	theirs, _ := b.create(b.keyB)

	all := b.eventPages(t, "", 100, auth)
	if len(all) != 5 {
		t.Fatalf("%d events, want 5", len(all))
	}
	for i, e := range all {
		// Newest first.
		if want := ids[len(ids)-1-i]; dataOf(e, "object").(map[string]any)["sessionId"] != want {
			t.Errorf("event %d is of %v, want %s", i, dataOf(e, "object").(map[string]any)["sessionId"], want)
		}
	}
	if paged := b.eventPages(t, "", 2, auth); !reflect.DeepEqual(paged, all) {
		t.Errorf("pages of 2 differ from one page:\n%v\n%v", paged, all)
	}
	if got := b.eventPages(t, "&type=session.created&subject="+ids[2], 10, auth); len(got) != 1 || dataOf(got[0], "object").(map[string]any)["sessionId"] != ids[2] {
		t.Errorf("subject filter: %v", got)
	}
	for _, typ := range []string{"session.expired", "webhook.test"} {
		if got := b.eventPages(t, "&type="+typ, 10, auth); len(got) != 0 {
			t.Errorf("type filter %s: %v", typ, got)
		}
	}

	// Merchant B sees only its own; A's ids are unknown to it.
	mine := b.eventPages(t, "", 10, b.bearer(b.keyB))
	if len(mine) != 1 || dataOf(mine[0], "object").(map[string]any)["sessionId"] != theirs {
		t.Fatalf("merchant B's events: %v", mine)
	}
	if got := b.eventPages(t, "&subject="+ids[0], 10, b.bearer(b.keyB)); len(got) != 0 {
		t.Errorf("merchant B sees A's session's events: %v", got)
	}
	aID := all[0]["id"].(string)
	for _, tc := range []struct {
		path      string
		header    []string
		status    int
		code, prm string
	}{
		{"/v1/events/" + aID, b.bearer(b.keyB), 404, "event_not_found", "id"},
		{"/v1/events/evt_nope", auth, 404, "event_not_found", "id"},
		{"/v1/events?starting_after=" + aID, b.bearer(b.keyB), 400, "invalid_cursor", "starting_after"},
		{"/v1/events?type=session.nope", auth, 400, "invalid_event_type", "type"},
		{"/v1/events?type=session.created&type=session.expired", auth, 400, "invalid_value", "type"},
		{"/v1/events?subject=" + strings.Repeat("a", 65), auth, 400, "invalid_subject", "subject"},
		{"/v1/events?limit=0", auth, 400, "invalid_limit", "limit"},
		{"/v1/events?limit=101", auth, 400, "invalid_limit", "limit"},
		{"/v1/events?sessionId=x", auth, 400, "unknown_parameter", "sessionId"},
		{"/v1/events", nil, 401, "missing_api_key", ""},
		{"/v1/events", b.bearer("settle_sk_nope"), 401, "invalid_api_key", ""},
		{"/v1/events", b.apiKey("settle_sk_nope"), 401, "invalid_api_key", ""},
	} {
		r := b.do("GET", tc.path, nil, tc.header...)
		if _, code, param := errorOf(t, r); r.Status != tc.status || code != tc.code || param != tc.prm {
			t.Errorf("GET %s: %d %s", tc.path, r.Status, r.Raw)
		}
	}
	if r := b.do("POST", "/v1/events", nil, auth...); r.Status != 405 {
		t.Errorf("POST /v1/events: %d %s", r.Status, r.Raw)
	}
	// Either key header authenticates.
	if got := b.eventPages(t, "", 100, b.apiKey(b.key)); !reflect.DeepEqual(got, all) {
		t.Errorf("with Api-Key: %d events, want the same %d", len(got), len(all))
	}
}

// A create replayed through its Idempotency-Key is one session and one
// event; so is a payment method set twice with the same type. The event
// commits with the request's stored response, in its transaction.
func TestEventsOncePerChange(t *testing.T) {
	b := setup(t, withEvents)
	auth := b.bearer(b.key)
	var id, secret string
	for range 3 {
		r := b.do("POST", "/v1/sessions", validCreate(), append([]string{"Idempotency-Key", "once"}, auth...)...)
		if r.Status != 201 {
			t.Fatalf("create: %d %s", r.Status, r.Raw)
		}
		s := r.Body["session"].(map[string]any)
		id, secret = s["sessionId"].(string), s["clientSecret"].(string)
	}
	for range 3 {
		pm := b.do("POST", "/v1/sessions/"+id+"/paymentMethods", map[string]any{"clientSecret": secret, "paymentMethod": map[string]any{"type": "evm"}})
		if pm.Status != 200 {
			t.Fatalf("payment method: %d %s", pm.Status, pm.Raw)
		}
	}
	evs := b.eventPages(t, "", 100, auth)
	if len(evs) != 2 || evs[0]["type"] != store.EventSessionWaitingPayment || evs[1]["type"] != store.EventSessionCreated {
		t.Fatalf("events %v, want session.created and one session.waiting_payment", evs)
	}
	if evs[0]["sequence"] != float64(2) || evs[1]["sequence"] != float64(1) {
		t.Errorf("sequences %v, %v; want 2, 1", evs[0]["sequence"], evs[1]["sequence"])
	}
}
