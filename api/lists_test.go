package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// listAll pages through path (a list endpoint with its query) with page
// size limit and returns every object, checking the envelope on the way.
func (b *bundle) listAll(t *testing.T, path string, limit int, header []string) []map[string]any {
	t.Helper()
	var out []map[string]any
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("paging does not end")
		}
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		p := path + sep + fmt.Sprintf("limit=%d", limit)
		if cursor != "" {
			p += "&starting_after=" + url.QueryEscape(cursor)
		}
		r := b.do("GET", p, nil, header...)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p, r.Status, r.Raw)
		}
		if len(r.Body) != 3 {
			t.Fatalf("GET %s: envelope %s", p, r.Raw)
		}
		data, ok := r.Body["data"].([]any)
		if !ok {
			t.Fatalf("GET %s: data is not an array: %s", p, r.Raw)
		}
		if len(data) > limit {
			t.Fatalf("GET %s: %d objects, limit %d", p, len(data), limit)
		}
		for _, o := range data {
			out = append(out, o.(map[string]any))
		}
		more := r.Body["hasMore"].(bool)
		next, _ := r.Body["nextCursor"].(string)
		if !more {
			if r.Body["nextCursor"] != nil {
				t.Fatalf("GET %s: last page with nextCursor %v", p, r.Body["nextCursor"])
			}
			return out
		}
		if len(data) != limit || next == "" {
			t.Fatalf("GET %s: hasMore with %d objects and nextCursor %q", p, len(data), next)
		}
		cursor = next
	}
}

func idsOf(objs []map[string]any, field string) []string {
	var ids []string
	for _, o := range objs {
		ids = append(ids, o[field].(string))
	}
	return ids
}

func TestListValidation(t *testing.T) {
	b := setup(t)
	otherID, _ := b.create(b.keyB)
	pay := b.do("POST", "/api/payment", validPayment(), b.apiKey(b.keyB)...)
	if pay.Status != 200 {
		t.Fatalf("create payment: %d %s", pay.Status, pay.Raw)
	}
	otherPayment := pay.Body["id"].(string)
	ownID, _ := b.create(b.key)
	for _, tc := range []struct {
		path, param, code string
	}{
		{"/v1/sessions?limit=0", "limit", "invalid_limit"},
		{"/v1/sessions?limit=101", "limit", "invalid_limit"},
		{"/v1/sessions?limit=ten", "limit", "invalid_limit"},
		{"/v1/sessions?limit=1&limit=2", "limit", "invalid_value"},
		{"/v1/sessions?starting_after=" + otherSession, "starting_after", "invalid_cursor"},
		{"/v1/sessions?starting_after=" + otherID, "starting_after", "invalid_cursor"},
		{"/v1/sessions?starting_after=", "starting_after", "invalid_cursor"},
		{"/v1/sessions?starting_after=" + strings.Repeat("x", 500), "starting_after", "invalid_cursor"},
		{"/v1/sessions?statuss=expired", "statuss", "unknown_parameter"},
		{"/v1/sessions?created_after=1", "created_after", "unknown_parameter"},
		{"/v1/sessions?clientSecret=x", "clientSecret", "unknown_parameter"},
		{"/v1/sessions?metadata=orderId:1", "metadata", "unknown_parameter"},
		{"/v1/sessions?status=paid", "status", "invalid_status"},
		{"/v1/sessions?status=expired,", "status", "invalid_status"},
		{"/v1/sessions?status=payment_unpaid", "status", "invalid_status"},
		{"/v1/sessions?created_gte=yesterday", "created_gte", "invalid_timestamp"},
		{"/v1/sessions?created_gte=-1", "created_gte", "invalid_timestamp"},
		{"/v1/sessions?created_lt=1700000000000000", "created_lt", "invalid_timestamp"},
		{"/v1/sessions?created_lt=2023-11-14", "created_lt", "invalid_timestamp"},
		{"/v1/sessions?created_lt=1.5", "created_lt", "invalid_timestamp"},
		{"/v1/sessions?created_lt=1&created_lt=2", "created_lt", "invalid_value"},
		{"/v1/sessions?receiverAddress=0x123", "receiverAddress", "invalid_address"},
		{"/v1/sessions?receiverAddress=" + url.QueryEscape("' OR 1=1 --"), "receiverAddress", "invalid_address"},
		{"/v1/sessions?depositTxHash=0xabc", "depositTxHash", "invalid_tx_hash"},
		{"/v1/sessions?externalId=", "externalId", "invalid_value"},
		{"/v1/sessions?externalId=a&externalId=b", "externalId", "invalid_value"},
		{"/v1/sessions?metadata[" + strings.Repeat("k", 41) + "]=1", "metadata[" + strings.Repeat("k", 41) + "]", "invalid_metadata"},
		{"/v1/sessions?metadata[a]=1&metadata[a]=2", "metadata[a]", "invalid_value"},
		{"/api/payments?status=succeeded", "status", "invalid_status"},
		{"/api/payments?starting_after=" + ownID, "starting_after", "invalid_cursor"}, // a session id is no payment cursor
		{"/api/payments?starting_after=" + otherPayment, "starting_after", "invalid_cursor"},
		{"/api/payments?limit=0", "limit", "invalid_limit"},
		{"/api/payments?foo=1", "foo", "unknown_parameter"},
	} {
		header := b.bearer(b.key)
		if strings.HasPrefix(tc.path, "/api/") {
			header = b.apiKey(b.key)
		}
		r := b.do("GET", tc.path, nil, header...)
		if r.Status != http.StatusBadRequest {
			t.Errorf("GET %s: %d %s, want 400", tc.path, r.Status, r.Raw)
			continue
		}
		if typ, code, param := errorOf(t, r); typ != "validation_error" || code != tc.code || param != tc.param {
			t.Errorf("GET %s: %s %s param %q, want validation_error %s param %q", tc.path, typ, code, param, tc.code, tc.param)
		}
	}
	// Authentication: each list takes its API's key, and only that.
	for _, tc := range []struct {
		path   string
		header []string
	}{
		{"/v1/sessions", nil},
		{"/v1/sessions", b.apiKey(b.key)},
		{"/v1/sessions", b.bearer("settle_sk_nope")},
		{"/api/payments", nil},
		{"/api/payments", b.bearer(b.key)},
		{"/api/payments", b.apiKey("settle_sk_nope")},
	} {
		if r := b.do("GET", tc.path, nil, tc.header...); r.Status != http.StatusUnauthorized {
			t.Errorf("GET %s with %v: %d %s, want 401", tc.path, tc.header, r.Status, r.Raw)
		}
	}
	if r := b.do("DELETE", "/api/payments", nil, b.apiKey(b.key)...); r.Status != http.StatusMethodNotAllowed {
		t.Errorf("DELETE /api/payments: %d", r.Status)
	}
}

// The session list returns each session exactly as GET /v1/sessions/{id}
// does to the API key, newest first, only the merchant's own, and each
// filter selects what it names; status agrees with GET's expiry on read.
func TestListSessionsEndpoint(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	start := time.Unix(0, b.now.Load())
	var ids []string // oldest first
	for i := range 7 {
		body := validCreate()
		body["metadata"] = map[string]any{"orderId": fmt.Sprint(100 + i%3), "i": fmt.Sprint(i)}
		r := b.do("POST", "/v1/sessions", body, b.bearer(b.key)...)
		if r.Status != http.StatusCreated {
			t.Fatalf("create: %d %s", r.Status, r.Raw)
		}
		ids = append(ids, r.Body["session"].(map[string]any)["sessionId"].(string))
		if i%2 == 1 {
			b.advance(10 * time.Minute) // sessions 0,1 at +0; 2,3 at +10m; …
		}
	}
	otherID, _ := b.create(b.keyB)
	// Session 5 gets a receiver, and a deposit in a transaction.
	pm := b.do("GET", "/v1/sessions/"+ids[5], nil, b.bearer(b.key)...).Body["session"].(map[string]any)
	r := b.do("POST", "/v1/sessions/"+ids[5]+"/paymentMethods", map[string]any{"clientSecret": pm["clientSecret"], "paymentMethod": map[string]any{"type": "evm"}})
	if r.Status != 200 {
		t.Fatalf("payment method: %d %s", r.Status, r.Raw)
	}
	receiver := r.Body["session"].(map[string]any)["paymentMethod"].(map[string]any)["receiverAddress"].(string)
	txHash := "0x" + strings.Repeat("5e", 32)
	if _, err := b.db.PG.Exec(ctx, `INSERT INTO deposits (chain_id, block_number, block_hash, block_time, tx_hash, log_index, token, from_address,
		to_address, amount, receiver_id, session_id, credited)
		SELECT 8453, 1, '0x01', now(), $1, 0, '0x02', '0x03', address, 1, id, session_id, true FROM receivers WHERE session_id = $2`, txHash, ids[5]); err != nil {
		t.Fatal(err)
	}

	// Two sessions per 10 minutes, at +0 … +20m, and ids[6] alone at
	// +30m; ties in createdAt go by id, descending.
	want := []string{ids[6]}
	for _, pair := range [][2]string{{ids[4], ids[5]}, {ids[2], ids[3]}, {ids[0], ids[1]}} {
		hi, lo := max(pair[0], pair[1]), min(pair[0], pair[1])
		want = append(want, hi, lo)
	}
	b.advance(45 * time.Minute) // at +75m ids[0..3] expired (1 hour TTL); the rest are open
	for _, limit := range []int{1, 2, 3, 7, 100} {
		got := b.listAll(t, "/v1/sessions", limit, b.bearer(b.key))
		if !slices.Equal(idsOf(got, "sessionId"), want) {
			t.Errorf("limit %d: %v, want %v", limit, idsOf(got, "sessionId"), want)
		}
	}
	// Each object is the one GET returns.
	for _, o := range b.listAll(t, "/v1/sessions", 100, b.bearer(b.key)) {
		g := b.do("GET", "/v1/sessions/"+o["sessionId"].(string), nil, b.bearer(b.key)...)
		if got, want := compact(t, o), compact(t, g.Body["session"]); got != want {
			t.Errorf("listed %s\nGET    %s", got, want)
		}
	}
	if got := idsOf(b.listAll(t, "/v1/sessions", 10, b.bearer(b.keyB)), "sessionId"); !slices.Equal(got, []string{otherID}) {
		t.Errorf("merchant B lists %v", got)
	}

	unix := func(d time.Duration) string { return fmt.Sprint(start.Add(d).Unix()) }
	upper := "0x" + strings.ToUpper(receiver[2:])
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"status=expired", []string{ids[0], ids[1], ids[2], ids[3]}},
		{"status=requires_payment_method", []string{ids[4], ids[6]}},
		{"status=waiting_payment", []string{ids[5]}},
		{"status=requires_payment_method&status=waiting_payment", []string{ids[4], ids[5], ids[6]}},
		{"status=requires_payment_method,waiting_payment,succeeded", []string{ids[4], ids[5], ids[6]}},
		{"status=succeeded", nil},
		{"created_gte=" + unix(20*time.Minute), []string{ids[4], ids[5], ids[6]}},
		{"created_lt=" + unix(10*time.Minute), []string{ids[0], ids[1]}},
		{"created_gte=" + unix(10*time.Minute) + "&created_lt=" + unix(20*time.Minute), []string{ids[2], ids[3]}},
		{"created_gte=" + unix(time.Hour), nil},
		{"receiverAddress=" + receiver, []string{ids[5]}},
		{"receiverAddress=" + upper, []string{ids[5]}},
		{"receiverAddress=" + strings.ToLower(receiver), []string{ids[5]}},
		{"depositTxHash=" + strings.ToUpper(txHash[2:]), []string{ids[5]}},
		{"depositTxHash=" + txHash, []string{ids[5]}},
		{"metadata[orderId]=101", []string{ids[1], ids[4]}},
		{"metadata[orderId]=101&metadata[i]=4", []string{ids[4]}},
		{"metadata[orderId]=101&status=expired", []string{ids[1]}},
		{"metadata[orderId]=999", nil},
		{"metadata[" + url.QueryEscape("order Id") + "]=101", nil},
		{"externalId=123", nil},
	} {
		got := idsOf(b.listAll(t, "/v1/sessions?"+tc.query, 2, b.bearer(b.key)), "sessionId")
		slices.Sort(got)
		w := slices.Clone(tc.want)
		slices.Sort(w)
		if !slices.Equal(got, w) {
			t.Errorf("%s: %v, want %v", tc.query, got, w)
		}
	}
	// The expired ones read expired in GET as well: the filter agrees.
	for _, id := range ids[:4] {
		if s := b.do("GET", "/v1/sessions/"+id, nil, b.bearer(b.key)...).Body["session"].(map[string]any); s["status"] != "expired" {
			t.Errorf("GET %s: %v", id, s["status"])
		}
	}
}

// The payment list returns each payment exactly as GET /api/payment/{id};
// its cursor is the payment id, and status takes the Payments API's names.
func TestListPaymentsEndpoint(t *testing.T) {
	b := setup(t)
	var ids []string
	for i := range 5 {
		body := validPayment()
		body["externalId"] = fmt.Sprint("order-", i)
		r := b.do("POST", "/api/payment", body, b.apiKey(b.key)...)
		if r.Status != 200 {
			t.Fatalf("create payment: %d %s", r.Status, r.Raw)
		}
		ids = append([]string{r.Body["id"].(string)}, ids...) // newest first
		b.advance(time.Minute)
	}
	b.create(b.key) // a Sessions API session: not a payment
	b.do("POST", "/api/payment", validPayment(), b.apiKey(b.keyB)...)
	got := b.listAll(t, "/api/payments", 2, b.apiKey(b.key))
	if !slices.Equal(idsOf(got, "id"), ids) {
		t.Errorf("payments %v, want %v", idsOf(got, "id"), ids)
	}
	for _, o := range got {
		g := b.do("GET", "/api/payment/"+o["id"].(string), nil, b.apiKey(b.key)...)
		if compact(t, o) != compact(t, g.Body) {
			t.Errorf("listed %s\nGET    %s", compact(t, o), compact(t, g.Body))
		}
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"externalId=order-3", ids[1:2]},
		{"externalId=order-9", nil},
		{"status=payment_unpaid", ids},
		{"status=payment_completed,payment_bounced", nil},
		{"metadata[mySystemId]=123", ids},
		{"metadata[name]=" + url.QueryEscape("John Doe") + "&externalId=order-0", ids[4:]},
	} {
		if got := idsOf(b.listAll(t, "/api/payments?"+tc.query, 3, b.apiKey(b.key)), "id"); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.query, got, tc.want)
		}
	}
	// Past the deadline a payment still reads payment_unpaid, in both.
	b.advance(2 * time.Hour)
	if got := idsOf(b.listAll(t, "/api/payments?status=payment_unpaid", 100, b.apiKey(b.key)), "id"); !slices.Equal(got, ids) {
		t.Errorf("unpaid after expiry: %v", got)
	}
}

// A client paging through GET /v1/sessions while other requests create
// sessions sees every session that existed when it began exactly once.
// The clock stands still, so every new session ties on createdAt with the
// existing ones and its random id lands before and after the cursor alike.
func TestListSessionsEndpointConcurrentCreates(t *testing.T) {
	b := setup(t)
	existing := map[string]bool{}
	for range 60 {
		id, _ := b.create(b.key)
		existing[id] = true
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int)
	go func() {
		n := 0
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, "POST", b.url+"/v1/sessions", strings.NewReader(compact(t, validCreate())))
			req.Header.Set("Authorization", "Bearer "+b.key)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				break // cancelled
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusCreated {
				n++
			}
		}
		done <- n
	}()
	seen := map[string]int{}
	for _, o := range b.listAll(t, "/v1/sessions", 1, b.bearer(b.key)) {
		seen[o["sessionId"].(string)]++
	}
	cancel()
	created := <-done
	for id := range existing {
		if seen[id] != 1 {
			t.Errorf("existing session %s listed %d times", id, seen[id])
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("session %s listed %d times", id, n)
		}
	}
	t.Logf("%d sessions created while paging; %d listed", created, len(seen))
}
