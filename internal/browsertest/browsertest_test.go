package browsertest_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/settle-dev/settle/internal/browsertest"
)

// strictCSP is the policy the checkout page is meant to ship with.
const strictCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'"

// site is a tiny site that serves every page under strictCSP and counts
// the requests to /ping.
type site struct {
	srv   *httptest.Server
	pings atomic.Int64
}

func newSite(t *testing.T) *site {
	t.Helper()
	s := &site{}
	page := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, `<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>browsertest</title><link rel="stylesheet" href="/style.css"></head>
<body>%s</body></html>`, body)
		}
	}
	static := func(contentType, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", contentType)
			fmt.Fprint(w, body)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", page(`<h1>Pay 10.00 USDC</h1><p id="status">waiting</p><script src="/app.js"></script>`))
	mux.Handle("GET /inline", page(`<p id="status">waiting</p><script>document.getElementById("status").textContent = "inline ran";</script>`))
	mux.Handle("GET /throws", page(`<p id="status">waiting</p><script src="/throws.js"></script>`))
	mux.Handle("GET /style.css", static("text/css", `body { font-family: sans-serif; margin: 16px; background: #f6f7f9; }
h1 { font-size: 22px; }
#status[data-fetched] { color: #0a7d32; }
`))
	mux.Handle("GET /app.js", static("text/javascript", `"use strict";
const status = document.getElementById("status");
status.textContent = "changed by app.js";
fetch("/ping").then((r) => r.text()).then((text) => { status.dataset.fetched = text; });
`))
	mux.Handle("GET /throws.js", static("text/javascript", `throw new Error("boom from throws.js");`))
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) {
		s.pings.Add(1)
		fmt.Fprint(w, "pong")
	})
	// The header on every response, as a real server would send it.
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", strictCSP)
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	if !strings.HasPrefix(s.srv.URL, "http://127.0.0.1:") {
		t.Fatalf("test server on %s, want loopback", s.srv.URL)
	}
	return s
}

func TestPageUnderStrictCSP(t *testing.T) {
	t.Parallel()
	s := newSite(t)
	b := browsertest.New(t)

	b.Do(t, chromedp.Navigate(s.srv.URL+"/"))
	fetched, err := chromedp.Run(b.Context(),
		chromedp.Poll[string](`document.getElementById("status").dataset.fetched`, chromedp.WithPollingTimeout(5*time.Second)))
	if err != nil {
		t.Fatalf("waiting for app.js's fetch: %v", err)
	}
	if fetched != "pong" {
		t.Errorf("data-fetched = %q, want %q", fetched, "pong")
	}
	text, err := chromedp.Run(b.Context(), chromedp.Text(chromedp.ID("status")))
	if err != nil {
		t.Fatal(err)
	}
	if text != "changed by app.js" {
		t.Errorf("#status text = %q, want %q (app.js did not run)", text, "changed by app.js")
	}
	if n := s.pings.Load(); n != 1 {
		t.Errorf("server saw %d requests to /ping, want 1", n)
	}
	width, err := chromedp.Run(b.Context(), chromedp.Evaluate[int64]("window.innerWidth"))
	if err != nil {
		t.Fatal(err)
	}
	if width != browsertest.Phone.Width {
		t.Errorf("window.innerWidth = %d, want the phone viewport's %d", width, browsertest.Phone.Width)
	}
	b.RequireClean(t)

	path := filepath.Join(t.TempDir(), "shots", "page.png")
	b.Screenshot(t, path)
	png, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A PNG starts with its signature and then the IHDR chunk: width and
	// height in device pixels.
	if len(png) < 24 || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("%s is not a PNG (%d bytes)", path, len(png))
	}
	gotW := binary.BigEndian.Uint32(png[16:20])
	wantW := uint32(float64(browsertest.Phone.Width) * browsertest.Phone.Scale)
	if gotW != wantW {
		t.Errorf("screenshot is %d px wide, want %d", gotW, wantW)
	}
}

// The detector must be able to fail: an inline script under script-src
// 'self' is a CSP violation, and a script that throws is an exception.
func TestRequireCleanFails(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path string
		want browsertest.Kind
		text string // in the message
	}{
		{"/inline", browsertest.CSPViolation, "script-src 'self'"},
		{"/throws", browsertest.Exception, "boom from throws.js"},
	}
	for _, tt := range tests {
		t.Run(strings.TrimPrefix(tt.path, "/"), func(t *testing.T) {
			t.Parallel()
			s := newSite(t)
			b := browsertest.New(t)
			b.Do(t, chromedp.Navigate(s.srv.URL+tt.path))

			var problems []browsertest.Message
			for deadline := time.Now().Add(5 * time.Second); len(problems) == 0 && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
				problems = b.Problems()
			}
			if len(problems) != 1 || problems[0].Kind != tt.want || !strings.Contains(problems[0].Text, tt.text) {
				t.Fatalf("problems = %q, want one %s mentioning %q; all messages: %q",
					problems, tt.want, tt.text, b.Messages())
			}
			text, err := chromedp.Run(b.Context(), chromedp.Text(chromedp.ID("status")))
			if err != nil {
				t.Fatal(err)
			}
			if text != "waiting" {
				t.Errorf("#status text = %q: the blocked script ran", text)
			}

			rec := &recordingTB{TB: t}
			b.RequireClean(rec)
			if !rec.failed || !strings.Contains(rec.msg, tt.text) {
				t.Errorf("RequireClean: failed=%v, message %q; want a failure naming %q", rec.failed, rec.msg, tt.text)
			}
		})
	}
}

// recordingTB stands in for a test that RequireClean should fail.
type recordingTB struct {
	testing.TB
	failed bool
	msg    string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Fatal(args ...any) {
	r.failed = true
	r.msg = fmt.Sprint(args...)
}
