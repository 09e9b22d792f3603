package evm_test

import (
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/settle-dev/settle/indexer"
	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/anvil/anviltest"
	"github.com/settle-dev/settle/internal/dbtest"
)

// strictProvider behaves like a hosted RPC: it refuses eth_getLogs over more
// than maxRange blocks and rate-limits every fifth request with HTTP 429.
type strictProvider struct {
	target             string
	maxRange           uint64
	calls              atomic.Int64
	refused, throttled atomic.Int64
}

func (p *strictProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if p.calls.Add(1)%5 == 0 {
		p.throttled.Add(1)
		http.Error(w, "Too Many Requests", http.StatusTooManyRequests)
		return
	}
	var req struct {
		ID     json.RawMessage  `json:"id"`
		Method string           `json:"method"`
		Params []map[string]any `json:"params"`
	}
	if json.Unmarshal(body, &req) == nil && req.Method == "eth_getLogs" && len(req.Params) == 1 {
		from, _ := req.Params[0]["fromBlock"].(string)
		to, _ := req.Params[0]["toBlock"].(string)
		f, _ := strconv.ParseUint(strings.TrimPrefix(from, "0x"), 16, 64)
		t, _ := strconv.ParseUint(strings.TrimPrefix(to, "0x"), 16, 64)
		if from != "" && t-f+1 > p.maxRange {
			p.refused.Add(1)
			writeRaw(w, `{"jsonrpc":"2.0","id":`+string(req.ID)+`,"error":{"code":-32005,"message":"query returned more than 10000 results. Try with this block range [`+from+`, `+from+`]."}}`)
			return
		}
	}
	out, err := forward(p.target, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	writeRaw(w, string(out))
}

func TestProviderLimitsSplitAndBackOff(t *testing.T) {
	node := anviltest.Start(t, anvil.Config{ChainID: 31337})
	db := dbtest.Migrated(t)
	randomActivity(t, node, rand.New(rand.NewPCG(9, 10)), 40)
	p := &strictProvider{target: node.URL(), maxRange: 3}
	proxy := httptest.NewServer(p)
	t.Cleanup(proxy.Close)
	start(t, node, db, proxy.URL, func(c *indexer.Config) { c.RangeBlocks = 16 })
	waitCursor(t, node, db, 90*time.Second)
	sameTransfers(t, chainTransfers(t, node), indexed(t, db, node.ChainID()))
	if p.refused.Load() == 0 || p.throttled.Load() == 0 {
		t.Errorf("provider limits not exercised: %d ranges refused, %d requests throttled", p.refused.Load(), p.throttled.Load())
	}
}
