package api_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func (b *bundle) page(path string) (int, http.Header, string) {
	b.t.Helper()
	resp, err := http.Get(b.url + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// The page escapes every merchant string, sends a strict CSP, and walks
// from choosing a token to paying it without JavaScript.
func TestCheckoutPage(t *testing.T) {
	b := setup(t)
	hostile := set(set(validPayment(), "display.intent", `<script>alert("intent")</script>`),
		"display.items", []any{map[string]any{"name": `<img src=x onerror=alert(1)>`, "description": `"><svg onload=alert(2)>`, "price": "$1"}})
	r := b.do("POST", "/api/payment", hostile, b.apiKey(b.key)...)
	if r.Status != 200 {
		t.Fatalf("create: %d %s", r.Status, r.Raw)
	}
	id := r.Body["id"].(string)
	status, h, body := b.page("/checkout?id=" + id)
	if status != 200 {
		t.Fatalf("page: %d %s", status, body)
	}
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("CSP allows unsafe sources: %q", csp)
	}
	if h.Get("Referrer-Policy") != "no-referrer" || h.Get("Cache-Control") != "no-store" {
		t.Errorf("headers: %v", h)
	}
	for _, bad := range []string{"<script>alert", "<img src=x", "<svg onload"} {
		if strings.Contains(body, bad) {
			t.Errorf("page contains unescaped %q", bad)
		}
	}
	if !strings.Contains(body, "&lt;script&gt;alert(&#34;intent&#34;)&lt;/script&gt;") {
		t.Errorf("escaped intent missing from the page")
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "style=") {
		t.Errorf("page has inline script or style, which the CSP forbids")
	}
	// Preferred token first (Optimism USDC), then the preferred chain's
	// tokens (Base).
	first := strings.Index(body, `value="10:`+opUSDC+`"`)
	base := strings.Index(body, `value="8453:`+baseUSDC+`"`)
	if first < 0 || base < 0 || first > base {
		t.Fatalf("options out of order (op %d, base %d):\n%s", first, base, body)
	}
	// Picking a token sets the payment method and redirects to its pay step.
	resp, err := noRedirect.PostForm(b.url+"/checkout/select", url.Values{"id": {id}, "pay": {"8453:" + baseUSDC}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/checkout?") {
		t.Fatalf("select: %d %q", resp.StatusCode, loc)
	}
	_, _, pay := b.page(loc)
	got := b.do("GET", "/checkout/status?id="+id, nil)
	receiver, _ := got.Body["receiverAddress"].(string)
	if got.Body["state"] != "open" || receiver == "" {
		t.Fatalf("status: %s", got.Raw)
	}
	for _, want := range []string{
		`<code id="receiver">` + receiver + `</code>`,
		`<span id="pay-amount">1.00</span>`,
		`href="ethereum:` + baseUSDC + `@8453/transfer?address=` + receiver + `&amp;uint256=1000000`,
		`<svg xmlns="http://www.w3.org/2000/svg"`,
		`id="countdown">60:00<`,
	} {
		if !strings.Contains(pay, want) {
			t.Errorf("pay step lacks %q:\n%s", want, pay)
		}
	}
	// A second select keeps the receiver.
	resp, err = noRedirect.PostForm(b.url+"/checkout/select", url.Values{"id": {id}, "pay": {"10:" + opUSDC}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if again := b.do("GET", "/checkout/status?id="+id, nil); again.Body["receiverAddress"] != receiver {
		t.Errorf("receiver changed on a second pick: %s", again.Raw)
	}
	// A token that is not offered is refused; unknown ids are a 404 page.
	resp, err = noRedirect.PostForm(b.url+"/checkout/select", url.Values{"id": {id}, "pay": {"8453:" + zeroAddress}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("select of an unknown token: %d", resp.StatusCode)
	}
	if st, _, _ := b.page("/checkout?id=" + strings.Repeat("1", 44)); st != 404 {
		t.Errorf("unknown payment page: %d", st)
	}
	// Expired.
	b.advance(2 * 3600e9)
	if _, _, exp := b.page("/checkout?id=" + id); !strings.Contains(exp, "This payment has expired") {
		t.Errorf("expired page:\n%s", exp)
	}
}

// A Sessions API session uses the same page with its client secret; a
// wrong secret is a 404.
func TestCheckoutPageForSession(t *testing.T) {
	b := setup(t)
	id, secret := b.create(b.key)
	if st, _, body := b.page("/checkout?session=" + id + "&secret=" + secret); st != 200 || !strings.Contains(body, "Deposit to Acme") {
		t.Errorf("session page: %d\n%s", st, body)
	}
	if st, _, _ := b.page("/checkout?session=" + id + "&secret=wrong"); st != 404 {
		t.Errorf("wrong secret: %d", st)
	}
}
