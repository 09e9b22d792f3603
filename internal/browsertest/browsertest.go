// Package browsertest runs a headless Chromium for tests of our web pages.
//
// A test calls [New] to get a [Browser]: one fresh browser process and tab,
// bound to the test and closed when it ends. The Browser records what the
// page wrote to the console, its uncaught exceptions and its
// Content-Security-Policy violations, so a test can require a strict policy
// to hold ([Browser.RequireClean]), and it can write a full-page screenshot
// ([Browser.Screenshot]).
//
// The browser is Debian's chromium, installed by `make test`
// (scripts/chromium.sh). Without it the tests skip, except under CI=true,
// where a missing browser fails them: a CI run never skips browser tests in
// silence. The environment variable SETTLE_CHROMIUM names another binary.
//
// Each browser starts offline-friendly and sandbox-free (we run as root in
// containers): no first-run, sync, component or background network traffic,
// no QUIC, no GPU, and a user data directory in t.TempDir().
package browsertest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// DefaultTimeout bounds each test's browser unless [WithTimeout] says
// otherwise. Starting Chromium takes well under a second here; a page test
// that needs more than this is stuck.
const DefaultTimeout = 30 * time.Second

// debianChromium is where Debian's chromium package puts the browser.
const debianChromium = "/usr/bin/chromium"

// Viewport is the size of the page as the browser reports it to CSS, in CSS
// pixels, with the device pixel ratio Scale. Mobile turns on the mobile
// layout (the <meta name="viewport"> tag counts) and touch events.
type Viewport struct {
	Width, Height int64
	Scale         float64
	Mobile        bool
}

// Phone is the default viewport: an iPhone 12 to 15 (390×844 at 3x, with
// touch). Checkout pages are mostly opened on a phone.
var Phone = Viewport{Width: 390, Height: 844, Scale: 3, Mobile: true}

// Desktop is a laptop-sized viewport without touch.
var Desktop = Viewport{Width: 1280, Height: 800, Scale: 1}

// Option changes how [New] starts the browser.
type Option func(*config)

type config struct {
	viewport Viewport
	timeout  time.Duration
}

// WithViewport sets the viewport of the tab (default [Phone]).
func WithViewport(v Viewport) Option {
	return func(c *config) { c.viewport = v }
}

// WithTimeout sets how long the browser may run before its context ends
// (default [DefaultTimeout]). The test's own deadline (go test -timeout)
// shortens it.
func WithTimeout(d time.Duration) Option {
	return func(c *config) { c.timeout = d }
}

// Path returns the browser binary the tests use: $SETTLE_CHROMIUM if set,
// else /usr/bin/chromium, else chromium on PATH. It returns "" when there is
// none. A SETTLE_CHROMIUM that is not executable is returned as it is, so
// that starting it fails loudly rather than falling back to another browser.
func Path() string {
	if p := os.Getenv("SETTLE_CHROMIUM"); p != "" {
		return p
	}
	if isExecutable(debianChromium) {
		return debianChromium
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	return ""
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// Browser is one headless Chromium process with one tab, bound to a test.
// Its context is cancelled, and the browser closed, when the test ends.
type Browser struct {
	ctx context.Context
	rec *recorder
}

// New starts a headless Chromium for t with the viewport set, and starts
// recording its console (see [Browser.Messages]). It skips t when there is
// no browser, or fails it when CI=true. It fails t when the browser does not
// start.
func New(t testing.TB, opts ...Option) *Browser {
	t.Helper()
	cfg := config{viewport: Phone, timeout: DefaultTimeout}
	for _, o := range opts {
		o(&cfg)
	}

	path := Path()
	if path == "" {
		const msg = "no Chromium: install it with scripts/chromium.sh (make test does), or set SETTLE_CHROMIUM"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: browser tests must not skip)")
		}
		t.Skip("SKIPPING: " + msg)
	}

	// t.TempDir registers its removal first, so it runs after the browser
	// below has exited (cleanups run last-in, first-out).
	dataDir := filepath.Join(t.TempDir(), "chromium")

	allocOpts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(dataDir),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.WindowSize(int(cfg.viewport.Width), int(cfg.viewport.Height)),
		// Already in the defaults; repeated so that this list is the whole
		// contract for our offline, root-run machines.
		chromedp.Headless,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
	)

	timeout := cfg.timeout
	if dl, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := dl.Deadline(); ok {
			// Leave a little time to close the browser and report.
			if left := time.Until(d) - 5*time.Second; left < timeout {
				timeout = max(left, time.Second)
			}
		}
	}
	base, cancelTimeout := context.WithTimeout(context.Background(), timeout)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(base, allocOpts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() {
		// Close the browser gracefully, so that no child process is left to
		// write into the data directory while t.TempDir removes it; then
		// free the contexts (cancelAlloc waits for the process to exit).
		if err := chromedp.Cancel(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) &&
			!errors.Is(err, context.Canceled) {
			t.Logf("browsertest: closing the browser: %v", err)
		}
		cancelCtx()
		cancelAlloc()
		cancelTimeout()
	})

	b := &Browser{ctx: ctx, rec: &recorder{}}
	// Listen starts the browser and opens the tab, so it also tells us
	// whether Chromium starts at all.
	if err := chromedp.Listen(ctx, b.rec.record); err != nil {
		t.Fatalf("browsertest: starting %s: %v", path, err)
	}
	v := cfg.viewport
	vopts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(v.Scale)}
	if v.Mobile {
		vopts = append(vopts, chromedp.EmulateMobile, chromedp.EmulateTouch)
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(v.Width, v.Height, vopts...)); err != nil {
		t.Fatalf("browsertest: setting the viewport: %v", err)
	}
	return b
}

// Context returns the chromedp context of the browser's tab, for
// chromedp.Do and chromedp.Run. It ends when the test ends or the timeout
// passes.
func (b *Browser) Context() context.Context { return b.ctx }

// Do runs the chromedp steps in the tab and fails t on the first error.
func (b *Browser) Do(t testing.TB, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		t.Fatalf("browsertest: %v", err)
	}
}

// Screenshot writes a PNG of the whole page, beyond the viewport, to path,
// creating its directory. It fails t if that does not work.
func (b *Browser) Screenshot(t testing.TB, path string) {
	t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("browsertest: screenshot: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatalf("browsertest: screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("browsertest: screenshot: %v", err)
	}
}
