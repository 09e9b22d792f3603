package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// flakyRPC is a JSON-RPC proxy in front of a node that misbehaves the way
// providers do: it drops requests (a 502 or a closed connection), delays
// them, answers eth_blockNumber with a head that lags (and so goes
// backwards when the lag starts), and answers eth_getLogs with an empty
// list. Faults are off until set, and each has its own rate.
type flakyRPC struct {
	target string
	srv    *httptest.Server
	client *http.Client

	mu sync.Mutex
	f  rpcFaults
	// rng is only used under mu.
	rng *rand.Rand
	// counts of faults injected, by kind.
	counts map[string]int
}

type rpcFaults struct {
	drop      float64       // share of requests dropped
	maxDelay  time.Duration // each request delayed by up to this
	staleHead uint64        // eth_blockNumber answers this many blocks behind
	emptyLogs float64       // share of eth_getLogs answered with []
}

func newFlakyRPC(t *testing.T, target string, seed uint64) *flakyRPC {
	p := &flakyRPC{target: target, client: &http.Client{Timeout: 30 * time.Second},
		rng: rand.New(rand.NewPCG(seed, 77)), counts: map[string]int{}}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *flakyRPC) URL() string { return p.srv.URL }

func (p *flakyRPC) set(f rpcFaults) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.f = f
}

func (p *flakyRPC) injected() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// roll reports whether an event of probability prob happens, and counts
// it under kind.
func (p *flakyRPC) roll(kind string, prob float64) bool {
	if prob <= 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rng.Float64() >= prob {
		return false
	}
	p.counts[kind]++
	return true
}

func (p *flakyRPC) faults() (rpcFaults, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var d time.Duration
	if p.f.maxDelay > 0 {
		d = time.Duration(p.rng.Int64N(int64(p.f.maxDelay)))
	}
	return p.f, d
}

type rpcMsg struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  json.RawMessage `json:"error,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	JSON   string          `json:"jsonrpc"`
}

func (p *flakyRPC) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f, delay := p.faults()
	if delay > 0 {
		time.Sleep(delay)
	}
	if p.roll("drop", f.drop) {
		if hj, ok := w.(http.Hijacker); ok && p.roll("drop_close", 0.5) {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
		http.Error(w, "flaky proxy: dropped", http.StatusBadGateway)
		return
	}
	resp, err := p.client.Post(p.target, "application/json", bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if f.staleHead > 0 || f.emptyLogs > 0 {
		out = p.rewrite(body, out, f)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(out)
}

// rewrite applies the answer faults to a single or batch response.
func (p *flakyRPC) rewrite(req, resp []byte, f rpcFaults) []byte {
	batch := len(bytes.TrimSpace(req)) > 0 && bytes.TrimSpace(req)[0] == '['
	var reqs, resps []rpcMsg
	if batch {
		if json.Unmarshal(req, &reqs) != nil || json.Unmarshal(resp, &resps) != nil {
			return resp
		}
	} else {
		var q, a rpcMsg
		if json.Unmarshal(req, &q) != nil || json.Unmarshal(resp, &a) != nil {
			return resp
		}
		reqs, resps = []rpcMsg{q}, []rpcMsg{a}
	}
	methods := map[string]string{}
	for _, q := range reqs {
		methods[string(q.ID)] = q.Method
	}
	changed := false
	for i := range resps {
		a := &resps[i]
		if len(a.Error) > 0 || len(a.Result) == 0 {
			continue
		}
		switch methods[string(a.ID)] {
		case "eth_blockNumber":
			if f.staleHead == 0 {
				continue
			}
			var hex string
			if json.Unmarshal(a.Result, &hex) != nil {
				continue
			}
			n, err := strconv.ParseUint(strings.TrimPrefix(hex, "0x"), 16, 64)
			if err != nil || n <= f.staleHead {
				continue
			}
			a.Result = json.RawMessage(fmt.Sprintf(`"0x%x"`, n-f.staleHead))
			p.roll("stale_head", 1)
			changed = true
		case "eth_getLogs":
			if string(a.Result) != "[]" && p.roll("empty_logs", f.emptyLogs) {
				a.Result = json.RawMessage(`[]`)
				changed = true
			}
		}
	}
	if !changed {
		return resp
	}
	var out []byte
	var err error
	if batch {
		out, err = json.Marshal(resps)
	} else {
		out, err = json.Marshal(resps[0])
	}
	if err != nil {
		return resp
	}
	return out
}
