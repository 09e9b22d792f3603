package evm_test

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/settle-dev/settle/internal/anvil"
	"github.com/settle-dev/settle/internal/anvil/anviltest"
	"github.com/settle-dev/settle/internal/dbtest"
)

// liar is a JSON-RPC proxy that answers some calls falsely, the way a
// lagging or broken provider behind a load balancer does: an empty log list,
// a stale head, a null block.
type liar struct {
	target                  string
	calls                   atomic.Int64
	emptyLogs, staleHeads   atomic.Int64
	nullBlocks, honestCalls atomic.Int64
}

func (l *liar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	n := l.calls.Add(1)
	s := string(body)
	var req struct {
		ID json.RawMessage `json:"id"`
	}
	_ = json.Unmarshal(body, &req)
	switch {
	case strings.Contains(s, `"eth_getLogs"`) && n%2 == 0:
		l.emptyLogs.Add(1)
		writeRaw(w, `{"jsonrpc":"2.0","id":`+string(req.ID)+`,"result":[]}`)
		return
	case strings.Contains(s, `"eth_blockNumber"`) && n%3 == 0:
		l.staleHeads.Add(1)
		writeRaw(w, `{"jsonrpc":"2.0","id":`+string(req.ID)+`,"result":"0x1"}`)
		return
	}
	out, err := forward(l.target, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if strings.HasPrefix(s, "[") && strings.Contains(s, `"eth_getBlockByNumber"`) && n%4 == 0 {
		var batch []map[string]any
		if json.Unmarshal(out, &batch) == nil && len(batch) > 0 {
			batch[len(batch)-1]["result"] = nil // "I have not seen that block"
			out, _ = json.Marshal(batch)
			l.nullBlocks.Add(1)
		}
	}
	l.honestCalls.Add(1)
	writeRaw(w, string(out))
}

// forward sends a JSON-RPC body to the real node and returns its answer.
func forward(target string, body []byte) ([]byte, error) {
	resp, err := http.Post(target, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func writeRaw(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, s)
}

func TestLyingRPCDoesNotSkipData(t *testing.T) {
	node := anviltest.Start(t, anvil.Config{ChainID: 31337})
	db := dbtest.Migrated(t)
	rng := rand.New(rand.NewPCG(5, 6))
	randomActivity(t, node, rng, 40)
	l := &liar{target: node.URL()}
	proxy := httptest.NewServer(l)
	t.Cleanup(proxy.Close)
	start(t, node, db, proxy.URL, nil)
	randomActivity(t, node, rng, 20)
	waitCursor(t, node, db, 90*time.Second)
	sameTransfers(t, chainTransfers(t, node), indexed(t, db, node.ChainID()))
	if l.emptyLogs.Load() == 0 || l.staleHeads.Load() == 0 || l.nullBlocks.Load() == 0 {
		t.Errorf("the proxy did not lie enough to test anything: %d empty log lists, %d stale heads, %d null blocks",
			l.emptyLogs.Load(), l.staleHeads.Load(), l.nullBlocks.Load())
	}
	t.Logf("proxy: %d empty log lists, %d stale heads, %d null blocks, %d honest answers",
		l.emptyLogs.Load(), l.staleHeads.Load(), l.nullBlocks.Load(), l.honestCalls.Load())
}
