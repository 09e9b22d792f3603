// Package redact removes the secrets that RPC URLs carry from text before
// it is logged or stored. Node providers put their API key in the URL
// (https://base-mainnet.g.alchemy.com/v2/KEY, https://x.quiknode.pro/KEY/,
// …?apikey=KEY, https://user:KEY@host), and go-ethereum's and net/http's
// errors quote the URL they failed on (`Post "https://…/v2/KEY": EOF`).
//
// Every http(s) and ws(s) URL keeps its scheme and host, so an SRE can
// still tell which provider failed; its userinfo, path, query and fragment
// become one Mark. A Redactor also knows the configured URLs and removes
// their long path, query and userinfo parts wherever they appear on their
// own (a node that echoes the request path in its error).
package redact

import (
	"cmp"
	"context"
	"log/slog"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Mark replaces what was removed.
const Mark = "REDACTED"

// minSecret is the shortest part of a configured URL that is removed
// wherever it appears: provider keys are 32 to 64 characters, while the
// short parts (v2, rpc, base-mainnet) are words that appear elsewhere.
const minSecret = 16

// start finds where a URL of a redacted scheme begins (not inside a word,
// so xhttps:// is not one).
var start = regexp.MustCompile(`(?i)\b(?:https?|wss?)://`)

// Text returns s with the userinfo, path, query and fragment of every
// http, https, ws and wss URL in it replaced by Mark. A URL ends at
// whitespace, a quote, a backslash or an angle bracket; punctuation that
// ends a sentence or closes a bracket right after it is kept as text.
func Text(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	locs := start.FindAllStringIndex(s, -1)
	if locs == nil {
		return s
	}
	var b strings.Builder
	last := 0
	for _, loc := range locs {
		if loc[0] < last {
			continue // inside the URL before (e.g. a URL in its query)
		}
		end := loc[1] + urlEnd(s[loc[1]:])
		b.WriteString(s[last:loc[0]])
		b.WriteString(redactURL(s[loc[0]:loc[1]], s[loc[1]:end]))
		last = end
	}
	b.WriteString(s[last:])
	return b.String()
}

// urlEnd returns the length of the URL that starts rest (rest follows the
// scheme's "://").
func urlEnd(rest string) int {
	n := strings.IndexFunc(rest, func(r rune) bool {
		switch r {
		case ' ', '\t', '\n', '\r', '"', '\'', '`', '\\', '<', '>':
			return true
		}
		return false
	})
	if n < 0 {
		n = len(rest)
	}
	return len(strings.TrimRight(rest[:n], ".,;:!?)]}"))
}

// redactURL redacts one URL: scheme is "https://" (as written), rest what
// follows it.
func redactURL(scheme, rest string) string {
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	host := authority
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		host = authority[i+1:]
	}
	if host == authority && (tail == "" || tail == "/") {
		return scheme + rest // nothing but a host: nothing to hide
	}
	return scheme + host + "/" + Mark
}

// Redactor removes the secrets of configured URLs and, generically, of any
// URL (Text). A nil *Redactor does the generic part only. It is safe for
// concurrent use.
type Redactor struct {
	// secrets are the configured URLs' long parts, longest first, so a
	// part that contains another is removed whole.
	secrets []string
}

// New returns a Redactor for the given URLs (the chains' rpc_url values).
// Empty strings and strings that are not URLs are ignored.
func New(urls ...string) *Redactor {
	var secrets []string
	add := func(s string) {
		if len(s) >= minSecret && !slices.Contains(secrets, s) {
			secrets = append(secrets, s)
		}
	}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			continue
		}
		if u.User != nil {
			add(u.User.Username())
			p, _ := u.User.Password()
			add(p)
			add(u.User.String()) // as written, percent-encoded
		}
		for _, seg := range strings.Split(u.EscapedPath(), "/") {
			add(seg)
			if dec, err := url.PathUnescape(seg); err == nil {
				add(dec)
			}
		}
		add(u.RawQuery)
		for _, vs := range u.Query() {
			for _, v := range vs {
				add(v)
			}
		}
		add(u.Fragment)
	}
	slices.SortFunc(secrets, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	return &Redactor{secrets: secrets}
}

// String returns s with every URL redacted (Text) and every long part of a
// configured URL replaced by Mark.
func (r *Redactor) String(s string) string {
	s = Text(s)
	if r == nil {
		return s
	}
	for _, secret := range r.secrets {
		if strings.Contains(s, secret) {
			s = strings.ReplaceAll(s, secret, Mark)
		}
	}
	return s
}

// NewHandler returns a slog.Handler that redacts (with r; nil: Text only)
// the message and every string and error value of a record, including
// those added with WithAttrs, inside groups and from LogValuers, before h
// formats it. Other values (numbers, times, structs) are passed as they
// are: log a URL as a string or an error.
func NewHandler(h slog.Handler, r *Redactor) slog.Handler {
	return &handler{h: h, r: r}
}

type handler struct {
	h slog.Handler
	r *Redactor
}

func (h *handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.h.Enabled(ctx, level)
}

func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.String(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.h.Handle(ctx, out)
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = h.attr(a)
	}
	return &handler{h: h.h.WithAttrs(red), r: h.r}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{h: h.h.WithGroup(name), r: h.r}
}

func (h *handler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.String(v.String()))
	case slog.KindGroup:
		group := v.Group()
		red := make([]slog.Attr, len(group))
		for i, g := range group {
			red[i] = h.attr(g)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(red...)}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, h.r.String(x.Error()))
		case *url.URL:
			return slog.String(a.Key, h.r.String(x.String()))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
