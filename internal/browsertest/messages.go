package browsertest

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Kind says where a [Message] came from.
type Kind string

const (
	// Console is a call of the console API by the page (console.log,
	// console.error, ...).
	Console Kind = "console"
	// Exception is an uncaught exception or an unhandled promise rejection.
	Exception Kind = "exception"
	// Log is an entry of the browser's own log: failed requests,
	// deprecations, security messages.
	Log Kind = "log"
	// CSPViolation is a browser log entry saying that the page's
	// Content-Security-Policy blocked something (an inline script or style,
	// a request to another origin, eval). It is a Log entry, told apart by
	// its source and text.
	CSPViolation Kind = "csp"
)

// Message is one thing the page or the browser reported for the tab.
type Message struct {
	Kind Kind
	// Level is the console call type ("log", "error", "warning", ...) for
	// Console, the log level ("info", "warning", "error", "verbose") for Log
	// and CSPViolation, and "error" for Exception.
	Level string
	Text  string
	// URL and Line (0-based, as the protocol reports it) say where it came
	// from, when the browser knows.
	URL  string
	Line int64
}

func (m Message) String() string {
	s := fmt.Sprintf("%s %s: %s", m.Kind, m.Level, m.Text)
	if m.URL != "" {
		s += fmt.Sprintf(" (%s:%d)", m.URL, m.Line+1)
	}
	return s
}

// recorder keeps the messages of one tab. Its record method runs on the
// goroutine that reads the browser's messages, so it only appends.
type recorder struct {
	mu   sync.Mutex
	msgs []Message
}

func (r *recorder) record(ev any) {
	var m Message
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		m = Message{Kind: Console, Level: string(ev.Type), Text: consoleText(ev.Args)}
		if ev.StackTrace != nil && len(ev.StackTrace.CallFrames) > 0 {
			f := ev.StackTrace.CallFrames[0]
			m.URL, m.Line = f.URL, f.LineNumber
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		if d == nil {
			return
		}
		m = Message{Kind: Exception, Level: "error", Text: d.Text, URL: d.URL, Line: d.LineNumber}
		if d.Exception != nil && d.Exception.Description != "" {
			m.Text += " " + d.Exception.Description
		}
	case *log.EventEntryAdded:
		e := ev.Entry
		if e == nil {
			return
		}
		m = Message{Kind: Log, Level: string(e.Level), Text: e.Text, URL: e.URL, Line: e.LineNumber}
		if isCSPViolation(e) {
			m.Kind = CSPViolation
		}
	default:
		return
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
}

// isCSPViolation reports whether a browser log entry is a blocked
// Content-Security-Policy directive. Chromium logs those as errors from the
// "security" source that quote the policy ("... because it violates the
// following Content Security Policy directive: ..."); report-only policies
// log the same with "[Report Only]".
func isCSPViolation(e *log.Entry) bool {
	return e.Source == log.EntrySourceSecurity && strings.Contains(e.Text, "Content Security Policy")
}

// consoleText joins the arguments of a console call as the console shows
// them, roughly: strings as they are, other values by their description.
func consoleText(args []*runtime.RemoteObject) string {
	parts := make([]string, 0, len(args))
	for _, a := range args {
		switch {
		case a == nil:
		case a.Type == runtime.RemoteObjectTypeString:
			var s string
			if err := json.Unmarshal(a.Value, &s); err != nil {
				s = string(a.Value)
			}
			parts = append(parts, s)
		case len(a.Value) > 0:
			parts = append(parts, string(a.Value))
		case a.Description != "":
			parts = append(parts, a.Description)
		case a.UnserializableValue != "":
			parts = append(parts, string(a.UnserializableValue))
		default:
			parts = append(parts, string(a.Type))
		}
	}
	return strings.Join(parts, " ")
}

// Messages returns what the tab reported so far, in order: console calls,
// uncaught exceptions and browser log entries (CSP violations among them).
// It first makes a round trip to the tab, so that everything the browser
// sent before the call is in.
func (b *Browser) Messages() []Message {
	b.flush()
	b.rec.mu.Lock()
	defer b.rec.mu.Unlock()
	return append([]Message(nil), b.rec.msgs...)
}

// Problems returns the messages that make a page broken: CSP violations and
// uncaught exceptions.
func (b *Browser) Problems() []Message {
	var out []Message
	for _, m := range b.Messages() {
		if m.Kind == CSPViolation || m.Kind == Exception {
			out = append(out, m)
		}
	}
	return out
}

// RequireClean fails t, listing them, if the tab had any CSP violation or
// uncaught exception so far. Call it after the steps of a page test, so that
// a page that breaks its own policy (an inline script, a style attribute, a
// request to another origin) fails the test even when it still looks right.
func (b *Browser) RequireClean(t testing.TB) {
	t.Helper()
	p := b.Problems()
	if len(p) == 0 {
		return
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "browsertest: the page had %d CSP violation(s) or uncaught exception(s):", len(p))
	for _, m := range p {
		sb.WriteString("\n\t")
		sb.WriteString(m.String())
	}
	t.Fatal(sb.String())
}

// flush waits for one answer from the tab. The browser sends a tab's events
// in order with the answers, and chromedp hands an event to the recorder
// before it reads the next message, so after the answer every event sent
// before it has been recorded. It does nothing once the context has ended.
func (b *Browser) flush() {
	if b.ctx.Err() != nil {
		return
	}
	_, _ = chromedp.Run(b.ctx, chromedp.Evaluate[chromedp.Void]("0"))
}
