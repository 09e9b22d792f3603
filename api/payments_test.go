package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
)

func (b *bundle) apiKey(key string) []string { return []string{"Api-Key", key} }

// validPayment is the seed's create example, on the test config's chains.
func validPayment() map[string]any {
	return map[string]any{
		"display": map[string]any{
			"intent": "Pay Daimoo",
			"items": []any{map[string]any{
				"name": "Milk", "description": "Get milk?", "image": "https://picsum.photos/200",
			}},
			"preferredChains": []any{8453},
			"preferredTokens": []any{map[string]any{"chain": 10, "address": opUSDC}},
			"paymentOptions":  []any{"Daimo", "Coinbase"},
			"redirectUri":     "https://shop.example/thanks",
		},
		"destination": map[string]any{
			"destinationAddress": payee,
			"chainId":            8453,
			"tokenAddress":       baseUSDC,
			"amountUnits":        "1.00",
		},
		"externalId": "123",
		"metadata":   map[string]any{"mySystemId": "123", "name": "John Doe"},
	}
}

var paymentIDRe = regexp.MustCompile(`^[1-9A-HJ-NP-Za-km-z]{43,44}$`)

func TestCreatePaymentResponse(t *testing.T) {
	b := setup(t)
	r := b.do("POST", "/api/payment", validPayment(), b.apiKey(b.key)...)
	if r.Status != 200 {
		t.Fatalf("create: %d %s", r.Status, r.Raw)
	}
	id, _ := r.Body["id"].(string)
	if !paymentIDRe.MatchString(id) {
		t.Errorf("id %q is not 32 bytes of base58", id)
	}
	if got, want := r.Body["url"], "https://pay.example.test/checkout?id="+id; got != want {
		t.Errorf("url = %v, want %s", got, want)
	}
	p := r.Body["payment"].(map[string]any)
	want := fmt.Sprintf(`{"id":%q,"status":"payment_unpaid","createdAt":"1700000000",`+
		`"display":{"intent":"Pay Daimoo","paymentValue":"1.00","currency":"USD"},"source":null,`+
		`"destination":{"destinationAddress":%q,"txHash":null,"chainId":"8453","amountUnits":"1.00","tokenSymbol":"USDC","tokenAddress":%q,"calldata":"0x"},`+
		`"externalId":"123","metadata":{"mySystemId":"123","name":"John Doe"}}`, id, payee, baseUSDC)
	if got := compact(t, p); got != canon(t, want) {
		t.Errorf("payment =\n%s\nwant\n%s", got, want)
	}
	// Both getters return the same object, bare (not wrapped), with the
	// seed's field order.
	for _, path := range []string{"/api/payment/" + id, "/api/payment/external-id/123"} {
		g := b.do("GET", path, nil, b.apiKey(b.key)...)
		if g.Status != 200 || strings.TrimSpace(g.Raw) != want {
			t.Errorf("GET %s = %d %s, want %s", path, g.Status, g.Raw, want)
		}
	}
	// A repeated create with the externalId is the same answer, even with
	// another body; nothing new is made.
	again := b.do("POST", "/api/payment", set(validPayment(), "destination.amountUnits", "2.00"), b.apiKey(b.key)...)
	if again.Status != 200 || again.Raw != r.Raw {
		t.Errorf("repeat create = %d %s, want the first body %s", again.Status, again.Raw, r.Raw)
	}
	// Another merchant's externalId space is its own.
	other := b.do("POST", "/api/payment", validPayment(), b.apiKey(b.keyB)...)
	if other.Status != 200 || other.Body["id"] == id {
		t.Errorf("merchant B's create with the same externalId = %d %s, want a new payment", other.Status, other.Raw)
	}
	// Without an externalId every create is new, and externalId is null.
	p1 := b.do("POST", "/api/payment", set(validPayment(), "externalId", del), b.apiKey(b.key)...)
	p2 := b.do("POST", "/api/payment", set(validPayment(), "externalId", del), b.apiKey(b.key)...)
	if p1.Status != 200 || p2.Status != 200 || p1.Body["id"] == p2.Body["id"] {
		t.Fatalf("creates without externalId: %d %s / %d %s", p1.Status, p1.Raw, p2.Status, p2.Raw)
	}
	if v, ok := p1.Body["payment"].(map[string]any)["externalId"]; !ok || v != nil {
		t.Errorf("externalId without one = %v (present %v), want null", v, ok)
	}
	// Calldata and an odd amount come back as sent; paymentValue keeps
	// every decimal and has at least two.
	withCall := set(set(set(validPayment(), "externalId", "call"), "destination.calldata", "0xabcdef"), "destination.amountUnits", "12.345678")
	c := b.do("POST", "/api/payment", withCall, b.apiKey(b.key)...)
	if c.Status != 200 {
		t.Fatalf("create with calldata: %d %s", c.Status, c.Raw)
	}
	cp := c.Body["payment"].(map[string]any)
	if d := cp["destination"].(map[string]any); d["calldata"] != "0xabcdef" || d["amountUnits"] != "12.345678" {
		t.Errorf("destination = %v", d)
	}
	if v := cp["display"].(map[string]any)["paymentValue"]; v != "12.345678" {
		t.Errorf("paymentValue = %v, want 12.345678", v)
	}
	// Numbers and booleans in metadata are stored as their text.
	n := b.do("POST", "/api/payment", set(set(validPayment(), "externalId", "num"), "metadata", map[string]any{"n": 1.5, "ok": true}), b.apiKey(b.key)...)
	if n.Status != 200 || compact(t, n.Body["payment"].(map[string]any)["metadata"]) != `{"n":"1.5","ok":"true"}` {
		t.Errorf("metadata with a number: %d %s", n.Status, n.Raw)
	}
}

func TestCreatePaymentValidation(t *testing.T) {
	b := setup(t)
	long := strings.Repeat("x", 201)
	many := map[string]any{}
	for i := range 51 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	items := make([]any, 51)
	for i := range items {
		items[i] = map[string]any{"name": "n"}
	}
	tests := []struct {
		name   string
		body   any
		status int
		code   string
		param  string
	}{
		{"valid", validPayment(), 200, "", ""},
		{"minimal", map[string]any{"display": map[string]any{"intent": "Pay"}, "destination": map[string]any{"destinationAddress": payee, "chainId": 8453, "tokenAddress": baseUSDC, "amountUnits": "1"}}, 200, "", ""},
		{"not json", "{", 400, "invalid_json", ""},
		{"unknown field", set(validPayment(), "color", "red"), 400, "unknown_field", "color"},
		{"no display", set(validPayment(), "display", del), 400, "missing_field", "display"},
		{"no intent", set(validPayment(), "display.intent", del), 400, "missing_field", "display.intent"},
		{"blank intent", set(validPayment(), "display.intent", "  "), 400, "missing_field", "display.intent"},
		{"long intent", set(validPayment(), "display.intent", long), 400, "too_long", "display.intent"},
		{"intent not a string", set(validPayment(), "display.intent", 5), 400, "invalid_type", "display.intent"},
		{"http logo", set(validPayment(), "display.orgLogo", "http://shop.example/logo.png"), 400, "invalid_url", "display.orgLogo"},
		{"javascript logo", set(validPayment(), "display.orgLogo", "javascript:alert(1)"), 400, "invalid_url", "display.orgLogo"},
		{"data logo", set(validPayment(), "display.orgLogo", "data:image/svg+xml,<svg onload=alert(1)>"), 400, "invalid_url", "display.orgLogo"},
		{"https logo", set(validPayment(), "display.orgLogo", "https://shop.example/logo.png"), 200, "", ""},
		{"javascript redirect", set(validPayment(), "display.redirectUri", "javascript:alert(document.cookie)"), 400, "invalid_url", "display.redirectUri"},
		{"relative redirect", set(validPayment(), "display.redirectUri", "/thanks"), 400, "invalid_url", "display.redirectUri"},
		{"protocol-relative redirect", set(validPayment(), "display.redirectUri", "//evil.example/"), 400, "invalid_url", "display.redirectUri"},
		{"redirect with credentials", set(validPayment(), "display.redirectUri", "https://user:pw@shop.example/"), 400, "invalid_url", "display.redirectUri"},
		{"http redirect", set(validPayment(), "display.redirectUri", "http://localhost:3000/done"), 200, "", ""},
		{"too many items", set(validPayment(), "display.items", items), 400, "too_many_items", "display.items"},
		{"item without name", set(validPayment(), "display.items", []any{map[string]any{"description": "d"}}), 400, "missing_field", "display.items[0].name"},
		{"item image not https", set(validPayment(), "display.items", []any{map[string]any{"name": "n", "image": "javascript:x"}}), 400, "invalid_url", "display.items[0].image"},
		{"item unknown field", set(validPayment(), "display.items", []any{map[string]any{"name": "n", "onclick": "x"}}), 400, "unknown_field", "onclick"},
		{"unknown preferred chain", set(validPayment(), "display.preferredChains", []any{1}), 400, "unsupported_chain", "display.preferredChains[0]"},
		{"solana as preferred chain", set(validPayment(), "display.preferredChains", []any{501}), 400, "unsupported_chain", "display.preferredChains[0]"},
		{"preferred token without chain", set(validPayment(), "display.preferredTokens", []any{map[string]any{"address": opUSDC}}), 400, "missing_field", "display.preferredTokens[0].chain"},
		{"preferred token not allowlisted", set(validPayment(), "display.preferredTokens", []any{map[string]any{"chain": 10, "address": baseUSDC}}), 400, "unsupported_token", "display.preferredTokens[0].address"},
		{"preferred token bad address", set(validPayment(), "display.preferredTokens", []any{map[string]any{"chain": 10, "address": "0x12"}}), 400, "invalid_address", "display.preferredTokens[0].address"},
		{"unknown payment option", set(validPayment(), "display.paymentOptions", []any{"Paypal"}), 400, "invalid_value", "display.paymentOptions[0]"},
		{"no destination", set(validPayment(), "destination", del), 400, "missing_field", "destination"},
		{"no amount", set(validPayment(), "destination.amountUnits", del), 400, "missing_field", "destination.amountUnits"},
		{"zero amount", set(validPayment(), "destination.amountUnits", "0.00"), 400, "invalid_amount", "destination.amountUnits"},
		{"negative amount", set(validPayment(), "destination.amountUnits", "-1"), 400, "invalid_amount", "destination.amountUnits"},
		{"exponent amount", set(validPayment(), "destination.amountUnits", "1e3"), 400, "invalid_amount", "destination.amountUnits"},
		{"amount as number", set(validPayment(), "destination.amountUnits", 1), 400, "invalid_type", "destination.amountUnits"},
		{"too many decimals", set(validPayment(), "destination.amountUnits", "1.0000001"), 400, "too_many_decimals", "destination.amountUnits"},
		{"18 decimals on DAI", set(set(validPayment(), "destination.tokenAddress", baseDAI), "destination.amountUnits", "1.000000000000000001"), 200, "", ""},
		{"native token", set(validPayment(), "destination.tokenAddress", zeroAddress), 400, "native_token_not_supported", "destination.tokenAddress"},
		{"token not allowlisted", set(validPayment(), "destination.tokenAddress", opUSDC), 400, "unsupported_token", "destination.tokenAddress"},
		{"no chain", set(validPayment(), "destination.chainId", del), 400, "missing_field", "destination.chainId"},
		{"unknown chain", set(validPayment(), "destination.chainId", 1), 400, "unsupported_chain", "destination.chainId"},
		{"chain as string", set(validPayment(), "destination.chainId", "8453"), 400, "invalid_type", "destination.chainId"},
		{"bad destination address", set(validPayment(), "destination.destinationAddress", "0x1234"), 400, "invalid_address", "destination.destinationAddress"},
		{"bad checksum", set(validPayment(), "destination.destinationAddress", payeeBadSum), 400, "invalid_checksum", "destination.destinationAddress"},
		{"zero destination", set(validPayment(), "destination.destinationAddress", zeroAddress), 400, "invalid_address", "destination.destinationAddress"},
		{"treasury destination", set(validPayment(), "destination.destinationAddress", treasury), 400, "reserved_address", "destination.destinationAddress"},
		{"executor destination", set(validPayment(), "destination.destinationAddress", baseExecutor), 400, "reserved_address", "destination.destinationAddress"},
		{"bad calldata", set(validPayment(), "destination.calldata", "0xzz"), 400, "invalid_calldata", "destination.calldata"},
		{"treasury refund", set(validPayment(), "refundAddress", treasury), 400, "reserved_address", "refundAddress"},
		{"bad refund", set(validPayment(), "refundAddress", "nope"), 400, "invalid_address", "refundAddress"},
		{"empty externalId", set(validPayment(), "externalId", ""), 400, "invalid_value", "externalId"},
		{"long externalId", set(validPayment(), "externalId", strings.Repeat("e", 256)), 400, "invalid_value", "externalId"},
		{"control char externalId", set(validPayment(), "externalId", "a\nb"), 400, "invalid_value", "externalId"},
		{"too much metadata", set(validPayment(), "metadata", many), 400, "too_many_keys", "metadata"},
		{"object in metadata", set(validPayment(), "metadata", map[string]any{"o": map[string]any{}}), 400, "invalid_metadata", "metadata.o"},
		{"null in metadata", set(validPayment(), "metadata", map[string]any{"o": nil}), 400, "invalid_metadata", "metadata.o"},
		{"long metadata value", set(validPayment(), "metadata", map[string]any{"k": strings.Repeat("v", 501)}), 400, "invalid_metadata", "metadata.k"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.body
			if m, ok := body.(map[string]any); ok && tt.status == 200 {
				body = set(m, "externalId", fmt.Sprintf("ok-%d", i)) // each valid one is new
			}
			r := b.do("POST", "/api/payment", body, b.apiKey(b.key)...)
			if r.Status != tt.status {
				t.Fatalf("status = %d, want %d: %s", r.Status, tt.status, r.Raw)
			}
			if tt.status == 200 {
				return
			}
			typ, code, param := errorOf(t, r)
			if code != tt.code || param != tt.param || typ != "validation_error" {
				t.Errorf("error = (%s, %s, %q), want (validation_error, %s, %q): %s", typ, code, param, tt.code, tt.param, r.Raw)
			}
		})
	}
}

func TestPaymentAuth(t *testing.T) {
	b := setup(t)
	r := b.do("POST", "/api/payment", validPayment(), b.apiKey(b.key)...)
	if r.Status != 200 {
		t.Fatalf("create: %d %s", r.Status, r.Raw)
	}
	id := r.Body["id"].(string)
	missing := b.do("GET", "/api/payment/"+strings.Repeat("1", 44), nil, b.apiKey(b.key)...)
	missingExt := b.do("GET", "/api/payment/external-id/nope", nil, b.apiKey(b.key)...)
	tests := []struct {
		name   string
		method string
		path   string
		body   any
		header []string
		status int
		code   string
		same   *response // the body must equal this one's
	}{
		{"create without key", "POST", "/api/payment", validPayment(), nil, 401, "missing_api_key", nil},
		{"create with wrong key", "POST", "/api/payment", validPayment(), b.apiKey("settle_sk_wrong"), 401, "invalid_api_key", nil},
		{"create with a Bearer header only", "POST", "/api/payment", validPayment(), b.bearer(b.key), 401, "missing_api_key", nil},
		{"get without key", "GET", "/api/payment/" + id, nil, nil, 401, "missing_api_key", nil},
		{"get with wrong key", "GET", "/api/payment/" + id, nil, b.apiKey("x"), 401, "invalid_api_key", nil},
		{"get missing", "GET", "/api/payment/" + strings.Repeat("1", 44), nil, b.apiKey(b.key), 404, "payment_not_found", &missing},
		{"get another merchant's", "GET", "/api/payment/" + id, nil, b.apiKey(b.keyB), 404, "payment_not_found", &missing},
		{"get malformed id", "GET", "/api/payment/0OIl", nil, b.apiKey(b.key), 404, "payment_not_found", &missing},
		{"get by externalId of another merchant", "GET", "/api/payment/external-id/123", nil, b.apiKey(b.keyB), 404, "payment_not_found", &missingExt},
		{"get by externalId without key", "GET", "/api/payment/external-id/123", nil, nil, 401, "missing_api_key", nil},
		{"wrong method", "DELETE", "/api/payment/" + id, nil, b.apiKey(b.key), 405, "method_not_allowed", nil},
		{"put on create", "PUT", "/api/payment", validPayment(), b.apiKey(b.key), 405, "method_not_allowed", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(tt.method, tt.path, tt.body, tt.header...)
			if r.Status != tt.status {
				t.Fatalf("status = %d, want %d: %s", r.Status, tt.status, r.Raw)
			}
			_, code, _ := errorOf(t, r)
			if code != tt.code {
				t.Errorf("code = %s, want %s", code, tt.code)
			}
			if tt.same != nil && r.Raw != tt.same.Raw {
				t.Errorf("body %s differs from %s", r.Raw, tt.same.Raw)
			}
		})
	}
}

// 50 concurrent creates with one externalId make one payment, and every
// caller gets it.
func TestExternalIDConcurrentCreates(t *testing.T) {
	b := setup(t)
	const n = 50
	var wg sync.WaitGroup
	ids := make([]string, n)
	statuses := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := b.do("POST", "/api/payment", set(validPayment(), "externalId", "race"), b.apiKey(b.key)...)
			statuses[i] = r.Status
			ids[i], _ = r.Body["id"].(string)
		}()
	}
	wg.Wait()
	for i := range n {
		if statuses[i] != 200 || ids[i] != ids[0] {
			t.Fatalf("create %d: status %d id %q, want 200 and %q", i, statuses[i], ids[i], ids[0])
		}
	}
	var sessions, outbox int
	ctx := context.Background()
	if err := b.db.PG.QueryRow(ctx, `SELECT count(*) FROM sessions WHERE external_id = 'race'`).Scan(&sessions); err != nil {
		t.Fatal(err)
	}
	if err := b.db.PG.QueryRow(ctx, `SELECT count(*) FROM outbox o JOIN sessions s ON o.subject_id IN (s.id, s.payment_id) WHERE s.external_id = 'race'`).Scan(&outbox); err != nil {
		t.Fatal(err)
	}
	// A payment's creation has no event (the Payments API's types are
	// payment_started, payment_completed and payment_bounced): no row
	// at all, and certainly not one per racing request.
	if sessions != 1 || outbox != 0 {
		t.Errorf("%d sessions and %d outbox rows for one externalId, want 1 and 0", sessions, outbox)
	}
}

// compact is v as JSON (object keys sorted).
func compact(t *testing.T, v any) string {
	t.Helper()
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(j)
}

// canon is the JSON text s with object keys sorted.
func canon(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%v: %s", err, s)
	}
	return compact(t, v)
}
