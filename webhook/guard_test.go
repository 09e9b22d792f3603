package webhook

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestAllowedAddr(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ip       string
		allowed  bool
		loopback bool // allowed under AllowLoopback
	}{
		{"8.8.8.8", true, true},
		{"2606:4700:4700::1111", true, true},
		{"127.0.0.1", false, true},
		{"127.1.2.3", false, true},
		{"::1", false, true},
		{"::ffff:127.0.0.1", false, true},
		{"10.0.0.1", false, false},
		{"::ffff:10.0.0.1", false, false},
		{"172.16.5.4", false, false},
		{"192.168.1.1", false, false},
		{"169.254.169.254", false, false},
		{"::ffff:169.254.169.254", false, false},
		{"100.64.0.1", false, false},
		{"0.0.0.0", false, false},
		{"::", false, false},
		{"224.0.0.1", false, false},
		{"255.255.255.255", false, false},
		{"fc00::1", false, false},
		{"fd12:3456::1", false, false},
		{"fe80::1", false, false},
		{"ff02::1", false, false},
		{"64:ff9b::a00:1", false, false}, // NAT64 of 10.0.0.1
	} {
		ip := netip.MustParseAddr(tc.ip)
		if got := (Policy{}).AllowedAddr(ip); got != tc.allowed {
			t.Errorf("%s allowed = %v, want %v", tc.ip, got, tc.allowed)
		}
		if got := (Policy{AllowLoopback: true}).AllowedAddr(ip); got != tc.loopback {
			t.Errorf("%s allowed with AllowLoopback = %v, want %v", tc.ip, got, tc.loopback)
		}
	}
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url      string
		ok       bool
		loopback bool // ok under AllowLoopback
	}{
		{"https://hooks.example.com/settle", true, true},
		{"https://hooks.example.com:8443/x?y=1", true, true},
		{"https://93.184.215.14/hook", true, true},
		{"http://hooks.example.com/settle", false, false},
		{"ftp://hooks.example.com/", false, false},
		{"https://user:pw@hooks.example.com/", false, false},
		{"https://hooks.example.com/#frag", false, false},
		{"hooks.example.com/settle", false, false},
		{"https://127.0.0.1/hook", false, true},
		{"http://127.0.0.1:8090/hook", false, true},
		{"https://[::1]/hook", false, true},
		{"https://localhost/hook", false, true},
		{"http://localhost:1/hook", false, true},
		{"https://10.0.0.1/hook", false, false},
		{"https://169.254.169.254/latest/meta-data", false, false},
		{"https://[::ffff:169.254.169.254]/", false, false},
		{"https://[fe80::1]/", false, false},
		{"https://metadata.google.internal/", false, false},
		{"https://printer.local/", false, false},
		{"https://intranet/", false, false},
		{"http://10.0.0.1/", false, false},
		{"https://" + strings.Repeat("a", 2100) + ".com/", false, false},
	} {
		_, err := (Policy{}).CheckURL(tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("CheckURL(%.60q) = %v, want ok %v", tc.url, err, tc.ok)
		}
		_, err = (Policy{AllowLoopback: true}).CheckURL(tc.url)
		if (err == nil) != tc.loopback {
			t.Errorf("CheckURL(%.60q) with AllowLoopback = %v, want ok %v", tc.url, err, tc.loopback)
		}
	}
}

// TestGuardRefusesAtConnect: the guarded client refuses private, loopback
// and metadata destinations when it connects, whatever the URL says (a
// literal, or a name that resolves there), before any byte is sent.
func TestGuardRefusesAtConnect(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	rc := &receiver{srv: srv}
	client := Policy{}.Client(2*time.Second, rc.pool())
	for _, u := range []string{
		"https://127.0.0.1:" + port + "/",
		"https://[::1]:" + port + "/",
		"https://[::ffff:127.0.0.1]:" + port + "/",
		"https://localhost:" + port + "/", // a DNS name resolving to loopback
		"https://10.0.0.1:" + port + "/",
		"https://169.254.169.254/latest/meta-data/",
		"https://[fe80::1]:" + port + "/",
		"https://100.64.0.1/",
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader("{}"))
		resp, err := client.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: answered %s, want refused", u, resp.Status)
			continue
		}
		if !errors.Is(err, ErrBlockedAddress) {
			t.Errorf("%s: %v, want ErrBlockedAddress", u, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the loopback server got %d requests through the guard", n)
	}
	// The same client with loopback allowed reaches it: the refusals above
	// were the guard's, not a broken setup.
	req, _ := http.NewRequest(http.MethodPost, "https://127.0.0.1:"+port+"/", strings.NewReader("{}"))
	resp, err := Policy{AllowLoopback: true}.Client(2*time.Second, rc.pool()).Do(req)
	if err != nil {
		t.Fatalf("with AllowLoopback: %v", err)
	}
	resp.Body.Close()
}

// TestGuardedDispatcher: with the guard on, a delivery to a loopback
// endpoint (registered before the policy changed, or through DNS) is
// refused at connect time and recorded as a failed attempt.
func TestGuardedDispatcher(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d := b.dispatcher(func(c *Config) { c.Policy = Policy{} })
	id := b.event("A", 1, "session.processing")
	b.step(d)
	if len(b.rc.messages()) != 0 {
		t.Fatal("the guarded dispatcher reached a loopback endpoint")
	}
	if st, n := b.delivery(id, b.endpoint.ID); st != "pending" || n != 1 {
		t.Errorf("delivery %s after %d attempts", st, n)
	}
	atts, _ := b.st.ListAttempts(b.ctx, b.merchant, b.endpoint.ID, 10, 0)
	if len(atts) != 1 || !strings.Contains(atts[0].Error, ErrBlockedAddress.Error()) {
		t.Errorf("attempts %+v", atts)
	}
}

// TestRedirectNotFollowed: a 3xx to a loopback URL is not followed (the
// target never sees a request) and counts as a failed attempt.
func TestRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var targetHits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { targetHits.Add(1) }))
	defer target.Close()
	b.rc.answer = func(n int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/internal-admin", http.StatusTemporaryRedirect)
	}
	d := b.dispatcher(nil)
	id := b.event("A", 1, "session.processing")
	b.step(d)
	if n := targetHits.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
	if st, _ := b.delivery(id, b.endpoint.ID); st != "pending" {
		t.Errorf("a 307 counted as %s", st)
	}
	atts, _ := b.st.ListAttempts(b.ctx, b.merchant, b.endpoint.ID, 10, 0)
	if len(atts) != 1 || atts[0].StatusCode != 307 || !strings.Contains(atts[0].Error, "redirect") {
		t.Errorf("attempts %+v", atts)
	}
}

// TestResponseReadCapped: an endpoint streaming an endless body does not
// hold the dispatcher: the read stops at the cap.
func TestResponseReadCapped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.rc.answer = func(n int, w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("x", 32<<10))
		for i := 0; i < 1<<15; i++ { // up to 1 GiB
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}
	d := b.dispatcher(nil)
	id := b.event("A", 1, "session.processing")
	start := time.Now()
	b.step(d)
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %s", el)
	}
	if st, _ := b.delivery(id, b.endpoint.ID); st != "succeeded" {
		t.Errorf("delivery %s", st)
	}
}
