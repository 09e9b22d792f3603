package redact

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestText(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		// Provider URLs: the key is in the path, the query or the userinfo.
		{"https://base-mainnet.g.alchemy.com/v2/AbCdEf0123456789", "https://base-mainnet.g.alchemy.com/REDACTED"},
		{"https://x.quiknode.pro/0123456789abcdef0123456789abcdef/", "https://x.quiknode.pro/REDACTED"},
		{"https://api.example.com/rpc?apikey=KEY", "https://api.example.com/REDACTED"},
		{"https://api.example.com?apikey=KEY", "https://api.example.com/REDACTED"},
		{"https://user:pass@node.example.com:8545", "https://node.example.com:8545/REDACTED"},
		{"https://user:p%40ss@node.example.com/x", "https://node.example.com/REDACTED"},
		{"wss://eth-mainnet.g.alchemy.com/v2/KEY", "wss://eth-mainnet.g.alchemy.com/REDACTED"},
		{"ws://127.0.0.1:8546/KEY#frag", "ws://127.0.0.1:8546/REDACTED"},
		{"HTTPS://Node.Example.com/KEY", "HTTPS://Node.Example.com/REDACTED"},
		// Nothing after the host: nothing to hide, kept as is.
		{"http://127.0.0.1:8545", "http://127.0.0.1:8545"},
		{"http://127.0.0.1:8545/", "http://127.0.0.1:8545/"},
		// Inside go-ethereum and net/http errors.
		{`Post "https://x.quiknode.pro/KEY/": dial tcp 1.2.3.4:443: connect: connection refused`,
			`Post "https://x.quiknode.pro/REDACTED": dial tcp 1.2.3.4:443: connect: connection refused`},
		{`estimating gas: Post "http://127.0.0.1:9/v2/KEY": EOF`, `estimating gas: Post "http://127.0.0.1:9/REDACTED": EOF`},
		{"dialing https://h.example/KEY: no known transport", "dialing https://h.example/REDACTED: no known transport"},
		{"the node at https://h.example/KEY, is chain 1.", "the node at https://h.example/REDACTED, is chain 1."},
		{"(https://h.example/KEY) and <wss://w.example/KEY2>", "(https://h.example/REDACTED) and <wss://w.example/REDACTED>"},
		{`{"url":"https://h.example/KEY"}`, `{"url":"https://h.example/REDACTED"}`},
		{"a https://a.example/1 b http://b.example/2", "a https://a.example/REDACTED b http://b.example/REDACTED"},
		// A URL inside another URL's query goes with it.
		{"https://a.example/r?next=https://b.example/KEY", "https://a.example/REDACTED"},
		// Not URLs of these schemes.
		{"postgres://u:p@db/settle", "postgres://u:p@db/settle"},
		{"ftp://h/KEY", "ftp://h/KEY"},
		{"xhttps://h/KEY", "xhttps://h/KEY"},
		{"no url here: dial tcp 1.2.3.4:443", "no url here: dial tcp 1.2.3.4:443"},
		{"", ""},
	} {
		if got := Text(c.in); got != c.want {
			t.Errorf("Text(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
}

func TestRedactorConfiguredURLs(t *testing.T) {
	const key = "0123456789abcdef0123456789abcdef"
	r := New("https://eth.example.com/v2/"+key, "https://other.example.com/rpc?apikey=QUERYKEY0123456789&network=base-mainnet", "", "not a url")
	for _, c := range []struct{ in, want string }{
		// The key alone (a node echoing the path, a wrapped message).
		{"404: no route for /v2/" + key, "404: no route for /v2/REDACTED"},
		{"bad key " + key, "bad key REDACTED"},
		{"bad key QUERYKEY0123456789", "bad key REDACTED"},
		// Short components (v2, rpc, base-mainnet) are no secret and stay.
		{"chain base-mainnet via /v2/ and /rpc", "chain base-mainnet via /v2/ and /rpc"},
		// Any other URL is still redacted generically.
		{`Post "https://eth.example.com/v2/` + key + `": EOF`, `Post "https://eth.example.com/REDACTED": EOF`},
		{"https://unconfigured.example/KEY", "https://unconfigured.example/REDACTED"},
	} {
		if got := r.String(c.in); got != c.want {
			t.Errorf("String(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
	var none *Redactor
	if got := none.String("https://h.example/KEY"); got != "https://h.example/REDACTED" {
		t.Errorf("nil Redactor: %q", got)
	}
}

// Every string and error a log line carries is redacted: the message,
// attributes, attributes added with With, groups and LogValuers.
func TestHandler(t *testing.T) {
	const key = "0123456789abcdef0123456789abcdef"
	url := "https://eth.example.com/v2/" + key
	var buf bytes.Buffer
	log := slog.New(NewHandler(slog.NewJSONHandler(&buf, nil), New(url)))
	log = log.With("rpc_url", url).WithGroup("g")
	log.Error("calling "+url+" failed",
		"err", fmt.Errorf("fetching: %w", errors.New(`Post "`+url+`": EOF`)),
		slog.Group("node", "url", url, "n", 3),
		"echo", key,
		"lazy", valuer{url},
		"count", 7)
	out := buf.String()
	if strings.Contains(out, key) {
		t.Errorf("log line carries the key: %s", out)
	}
	for _, want := range []string{`"msg":"calling https://eth.example.com/REDACTED failed"`, `"rpc_url":"https://eth.example.com/REDACTED"`,
		`"err":"fetching: Post \"https://eth.example.com/REDACTED\": EOF"`, `"node":{"url":"https://eth.example.com/REDACTED","n":3}`,
		`"echo":"REDACTED"`, `"lazy":"https://eth.example.com/REDACTED"`, `"count":7`} {
		if !strings.Contains(out, want) {
			t.Errorf("log line lacks %s: %s", want, out)
		}
	}
	if h := NewHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}), nil); h.Enabled(t.Context(), slog.LevelInfo) {
		t.Error("the wrapper enables a level the handler it wraps does not")
	}
}

type valuer struct{ s string }

func (v valuer) LogValue() slog.Value { return slog.StringValue(v.s) }
