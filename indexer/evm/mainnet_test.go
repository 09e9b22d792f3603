package evm

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// TestMainnetBlock18000000 runs the production source over real Ethereum
// mainnet data (testdata/ethereum-18000000, see SOURCE.md there): a node
// stand-in serves the block and its Transfer logs, and the decoded
// transfers must be exactly the block's 13 USDC and 45 USDT transfers, as
// computed independently of this decoder in expected.json.
func TestMainnetBlock18000000(t *testing.T) {
	const dir = "testdata/ethereum-18000000/"
	block, err := os.ReadFile(dir + "block.json")
	if err != nil {
		t.Fatal(err)
	}
	logs, err := os.ReadFile(dir + "logs.json")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var one struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params []any           `json:"params"`
		}
		reply := func(id json.RawMessage, method string, params []any) string {
			switch method {
			case "eth_getLogs":
				return `{"jsonrpc":"2.0","id":` + string(id) + `,"result":` + string(logs) + `}`
			case "eth_getBlockByNumber":
				if params[0] == "0x112a880" {
					return `{"jsonrpc":"2.0","id":` + string(id) + `,"result":` + string(block) + `}`
				}
				return `{"jsonrpc":"2.0","id":` + string(id) + `,"result":null}`
			}
			return `{"jsonrpc":"2.0","id":` + string(id) + `,"error":{"code":-32601,"message":"method not found"}}`
		}
		w.Header().Set("Content-Type", "application/json")
		if strings.HasPrefix(strings.TrimSpace(string(body)), "[") {
			var batch []struct {
				ID     json.RawMessage `json:"id"`
				Method string          `json:"method"`
				Params []any           `json:"params"`
			}
			_ = json.Unmarshal(body, &batch)
			parts := make([]string, len(batch))
			for i, c := range batch {
				parts[i] = reply(c.ID, c.Method, c.Params)
			}
			_, _ = io.WriteString(w, "["+strings.Join(parts, ",")+"]")
			return
		}
		_ = json.Unmarshal(body, &one)
		_, _ = io.WriteString(w, reply(one.ID, one.Method, one.Params))
	}))
	defer srv.Close()

	src, err := New(context.Background(), Config{URL: srv.URL, ChainName: "ethereum"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	rg, err := src.Fetch(context.Background(), 18_000_000, 18_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if len(rg.Blocks) != 1 || rg.Blocks[0].Hash != "0x95b198e154acbfc64109dfd22d8224fe927fd8dfdedfae01587674482ba4baf3" {
		t.Fatalf("blocks = %+v", rg.Blocks)
	}

	var expected []struct {
		Token, From, To, Amount, TxHash string
		LogIndex                        uint32
	}
	raw, err := os.ReadFile(dir + "expected.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &expected); err != nil {
		t.Fatal(err)
	}
	const usdc, usdt = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", "0xdac17f958d2ee523a2206206994597c13d831ec7"
	var got []string
	count := map[string]int{}
	for _, tr := range rg.Transfers {
		if tr.BlockHash != rg.Blocks[0].Hash || tr.BlockTime != rg.Blocks[0].Time || tr.BlockNumber != 18_000_000 {
			t.Errorf("transfer %s/%d has block %d %s %d", tr.TxHash, tr.LogIndex, tr.BlockNumber, tr.BlockHash, tr.BlockTime)
		}
		if tr.Token == usdc || tr.Token == usdt {
			count[tr.Token]++
			got = append(got, strings.Join([]string{tr.Token, tr.From, tr.To, tr.Amount, tr.TxHash}, " ")+" "+itoa(tr.LogIndex))
		}
	}
	if count[usdc] != 13 || count[usdt] != 45 {
		t.Errorf("decoded %d USDC and %d USDT transfers, want 13 and 45", count[usdc], count[usdt])
	}
	if len(got) != len(expected) {
		t.Fatalf("decoded %d stablecoin transfers, expected.json has %d", len(got), len(expected))
	}
	for i, e := range expected {
		want := strings.Join([]string{e.Token, e.From, e.To, e.Amount, e.TxHash}, " ") + " " + itoa(e.LogIndex)
		if got[i] != want {
			t.Errorf("transfer %d:\n got %s\nwant %s", i, got[i], want)
		}
	}
	// 143 logs carry the Transfer topic; two are ERC-721 (four topics) and
	// must not be counted.
	if len(rg.Transfers) != 141 {
		t.Errorf("decoded %d ERC-20 transfers in the block, want 141", len(rg.Transfers))
	}
}

func itoa(v uint32) string {
	b, _ := json.Marshal(v)
	return string(b)
}
