package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/ethereum/go-ethereum/common"

	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/browsertest"
)

// browser is a headless Chromium (internal/browsertest) for one test; the
// test fails at its end if the page ever reported a CSP violation or an
// uncaught exception.
type browser struct {
	t   *testing.T
	ctx context.Context
	*browsertest.Browser
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	bt := browsertest.New(t, browsertest.WithTimeout(4*time.Minute))
	t.Cleanup(func() { bt.RequireClean(t) })
	return &browser{t: t, ctx: bt.Context(), Browser: bt}
}

func (b *browser) run(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	b.Do(b.t, actions...)
}

// waitText waits until the element sel shows up (the page reloads itself
// when the payment's state changes).
func (b *browser) waitText(sel string, within time.Duration) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, within)
	defer cancel()
	err := chromedp.Do(ctx, chromedp.WaitVisible(sel))
	var s string
	if err == nil {
		s, err = chromedp.Run(ctx, chromedp.Text(sel))
	}
	if err != nil {
		loc, _ := chromedp.Run(b.ctx, chromedp.Location())
		html, _ := chromedp.Run(b.ctx, chromedp.OuterHTML("body"))
		b.t.Fatalf("waiting for %s on %s: %v\n%s", sel, loc, err, html)
	}
	return s
}

// screenshot saves the page as name.png under SETTLE_SCREENSHOTS (make
// screenshots), and does nothing otherwise.
func (b *browser) screenshot(name string) {
	if dir := os.Getenv("SETTLE_SCREENSHOTS"); dir != "" {
		b.Screenshot(b.t, filepath.Join(dir, name+".png"))
	}
}

// merchantSite is where redirectUri sends the payer.
func merchantSite(t *testing.T) string {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!doctype html><title>Thanks</title><h1 id="thanks">Thanks for your order</h1>`)
	}))
	t.Cleanup(ts.Close)
	return ts.URL + "/thanks"
}

func (s *stack) createPayment(amount, redirect string, extra map[string]any) (id, url string) {
	s.t.Helper()
	body := map[string]any{
		"display": map[string]any{"intent": "Pay Acme Coffee", "redirectUri": redirect,
			"items": []any{map[string]any{"name": "Flat white", "description": "Oat milk", "price": "$" + amount}}},
		"destination": map[string]any{"destinationAddress": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "chainId": chainB,
			"tokenAddress": s.usdcB.Hex(), "amountUnits": amount},
		"refundAddress": anvil.DevAddress(payerKey).Hex(),
	}
	for k, v := range extra {
		body[k] = v
	}
	j, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", s.url+"/api/payment", strings.NewReader(string(j)))
	req.Header.Set("Api-Key", s.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != 200 {
		s.t.Fatalf("create payment: %d %v", resp.StatusCode, out)
	}
	return out["id"].(string), out["url"].(string)
}

func (s *stack) payment(id string) map[string]any {
	s.t.Helper()
	req, _ := http.NewRequest("GET", s.url+"/api/payment/"+id, nil)
	req.Header.Set("Api-Key", s.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return out
}

// pickToken chooses USDC on chain A on the checkout page and reads what
// the page tells the payer to send.
func (b *browser) pickToken(url string) (receiver common.Address, amount string) {
	b.t.Helper()
	opt := fmt.Sprintf(`button.option[data-chain-id="%d"]`, chainA)
	b.run(chromedp.Navigate(url), chromedp.WaitVisible(opt))
	b.screenshot("1-choose")
	b.run(chromedp.Click(opt))
	recv := b.waitText("#receiver", 20*time.Second)
	amount = b.waitText("#pay-amount", time.Second)
	qr, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.querySelectorAll('#qr svg path').length`))
	if err != nil || qr != 1 {
		b.t.Errorf("pay step has no QR code")
	}
	if !common.IsHexAddress(recv) {
		b.t.Fatalf("receiver on the page = %q", recv)
	}
	b.screenshot("2-pay")
	return common.HexToAddress(recv), amount
}

// A payer opens the url POST /api/payment returned, picks a chain and a
// token, pays what the page says to the address it shows, and the page
// follows the payment to completed and redirects to the merchant; the same
// payer can pay by the sandbox onramp instead.
//
// The merchant's webhook endpoint gets payment_started then
// payment_completed, the last with the payment as GET returns it.
func TestCheckoutInBrowser(t *testing.T) {
	s := newStack(t, options{fiat: true, webhooks: true})
	thanks := merchantSite(t)

	t.Run("wallet", func(t *testing.T) {
		b := newBrowser(t)
		id, url := s.createPayment("2.50", thanks, nil)
		recv, amount := b.pickToken(url)
		if amount != "2.50" {
			t.Errorf("page asks for %q, want 2.50", amount)
		}
		if p := s.payment(id); p["status"] != "payment_unpaid" || p["source"] != nil {
			t.Errorf("before paying: %v", p)
		}
		s.pay(s.a, s.usdcA, recv, 2_500_000)
		b.waitText("#thanks", 90*time.Second)
		p := s.payment(id)
		dest := p["destination"].(map[string]any)
		src, _ := p["source"].(map[string]any)
		if p["status"] != "payment_completed" || dest["txHash"] == nil || src == nil || src["amountUnits"] != "2.5" ||
			src["chainId"] != fmt.Sprint(chainA) || src["payerAddress"] != anvil.DevAddress(payerKey).Hex() {
			t.Errorf("after paying: %v", p)
		}
		if got := s.balance(s.b, s.usdcB, common.HexToAddress("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")); got.Int64() < 2_500_000 {
			t.Errorf("destination holds %s", got)
		}
		evs := s.hooks.waitFor(t, id, "payment_completed", 20*time.Second)
		checkEvents(t, evs, []string{"payment_started", "payment_completed"}, s.payment(id))
	})

	t.Run("completed page", func(t *testing.T) {
		// Reopening a completed payment's page shows it completed (and
		// redirects again).
		b := newBrowser(t)
		id, url := s.createPayment("1.00", "", nil)
		recv, _ := b.pickToken(url)
		s.pay(s.a, s.usdcA, recv, 1_000_000)
		b.waitText("#status.completed", 90*time.Second)
		b.screenshot("4-completed")
		if p := s.payment(id); p["status"] != "payment_completed" {
			t.Errorf("status %v", p["status"])
		}
	})

	t.Run("sandbox fiat", func(t *testing.T) {
		b := newBrowser(t)
		id, url := s.createPayment("3.00", thanks, nil)
		b.run(chromedp.Navigate(url), chromedp.WaitVisible("#pay-fiat"), chromedp.Click("#pay-fiat"))
		if local := b.waitText("#local", 20*time.Second); !strings.Contains(local, "3.00") {
			t.Errorf("onramp shows %q", local)
		}
		b.screenshot("6-onramp")
		b.run(chromedp.Click("#pay"))
		b.waitText("#tx", 40*time.Second)
		b.run(chromedp.Click("#back"))
		b.waitText("#thanks", 90*time.Second)
		if p := s.payment(id); p["status"] != "payment_completed" {
			t.Errorf("after the onramp: %v", p)
		}
	})
}

// An underpaid payment bounces at its deadline and an unpaid one expires;
// the open pages follow both.
func TestCheckoutBounceAndExpiryInBrowser(t *testing.T) {
	s := newStack(t, options{sessionTTL: 25 * time.Second})
	t.Run("bounce", func(t *testing.T) {
		b := newBrowser(t)
		id, url := s.createPayment("2.00", "", nil)
		recv, _ := b.pickToken(url)
		s.pay(s.a, s.usdcA, recv, 500_000) // a quarter of it
		// Underpaid, it stays processing until its deadline.
		b.waitText("#status.processing", 60*time.Second)
		b.screenshot("3-processing")
		b.waitText("#status.bounced", 120*time.Second)
		b.screenshot("5-bounced")
		p := s.payment(id)
		if p["status"] != "payment_bounced" || p["destination"].(map[string]any)["txHash"] != nil {
			t.Errorf("bounced payment: %v", p)
		}
	})
	t.Run("expiry", func(t *testing.T) {
		b := newBrowser(t)
		id, url := s.createPayment("2.00", "", nil)
		b.pickToken(url)
		b.waitText("#status.expired", 120*time.Second)
		b.screenshot("7-expired")
		if p := s.payment(id); p["status"] != "payment_unpaid" {
			t.Errorf("expired payment: %v", p)
		}
	})
}
