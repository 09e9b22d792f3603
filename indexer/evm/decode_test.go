package evm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

func word(v *big.Int) string { return fmt.Sprintf("0x%064x", v) }

func TestUint256Decimal(t *testing.T) {
	pow := func(b, e int64) *big.Int { return new(big.Int).Exp(big.NewInt(b), big.NewInt(e), nil) }
	sub1 := func(v *big.Int) *big.Int { return new(big.Int).Sub(v, big.NewInt(1)) }
	for _, v := range []*big.Int{
		big.NewInt(0), big.NewInt(1), big.NewInt(10_500_000), sub1(pow(2, 64)), pow(2, 64),
		pow(10, 19), sub1(pow(10, 19)), sub1(pow(10, 38)), pow(10, 38), pow(10, 57), sub1(pow(2, 256)),
	} {
		got, err := uint256Decimal(word(v))
		if err != nil || got != v.String() {
			t.Errorf("uint256Decimal(%s) = %q, %v", v, got, err)
		}
	}
	for _, bad := range []string{"", "0x", "0x1", "0x" + strings.Repeat("g", 64), strings.Repeat("0", 66), "0x" + strings.Repeat("0", 65)} {
		if _, err := uint256Decimal(bad); err == nil {
			t.Errorf("uint256Decimal(%q) accepted", bad)
		}
	}
}

func FuzzUint256Decimal(f *testing.F) {
	f.Add([]byte{1})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 32 {
			b = b[:32]
		}
		v := new(big.Int).SetBytes(b)
		got, err := uint256Decimal(word(v))
		if err != nil || got != v.String() {
			t.Fatalf("uint256Decimal(%s) = %q, %v", v, got, err)
		}
	})
}

// refLog is the encoding/json reading of a log, the reference the lean
// decoder is checked against.
type refLog struct {
	Address     string   `json:"address"`
	Topics      []string `json:"topics"`
	Data        string   `json:"data"`
	BlockNumber string   `json:"blockNumber"`
	BlockHash   string   `json:"blockHash"`
	TxHash      string   `json:"transactionHash"`
	LogIndex    string   `json:"logIndex"`
	Removed     bool     `json:"removed"`
}

func sameAsReference(t *testing.T, body string, got []rawLog) {
	t.Helper()
	var env struct {
		Result []refLog `json:"result"`
	}
	if !utf8.ValidString(body) {
		// encoding/json rewrites invalid UTF-8 to U+FFFD while our decoder
		// keeps bytes as they are; neither is hex, and transfer() rejects
		// both, so there is nothing meaningful to compare.
		return
	}
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		return // not JSON encoding/json accepts: nothing to compare
	}
	if len(env.Result) != len(got) {
		t.Fatalf("decoded %d logs, encoding/json %d", len(got), len(env.Result))
	}
	for i, r := range env.Result {
		g := got[i]
		topics := g.Topics[:min(g.NTopics, 4)]
		if g.Address != r.Address || g.Data != r.Data || g.BlockHash != r.BlockHash || g.TxHash != r.TxHash ||
			g.Removed != r.Removed || g.NTopics != len(r.Topics) || strings.Join(topics, ",") != strings.Join(r.Topics[:len(topics)], ",") ||
			fmt.Sprintf("%#x", g.BlockNumber) != r.BlockNumber || fmt.Sprintf("%#x", g.LogIndex) != r.LogIndex {
			t.Fatalf("log %d: got %+v, encoding/json %+v", i, g, r)
		}
	}
}

const sampleLog = `{"address":"0x5fbdb2315678afecb367f032d93f642f64180aa3","topics":["0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef","0x000000000000000000000000f39fd6e51aad88f6f4ce6ab8827279cfffb92266","0x00000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c8"],"data":"0x0000000000000000000000000000000000000000000000000000000000989680","blockHash":"0x0a7a1fbc6c7a2bd8b5e5e3a4e8b4e9e1d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2","blockNumber":"0x2","blockTimestamp":"0x6553f100","transactionHash":"0x1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a7988","transactionIndex":"0x0","logIndex":"0x0","removed":false}`

func TestDecodeLogsResponse(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		n       int
		wantErr string
	}{
		{"one log", `{"jsonrpc":"2.0","id":1,"result":[` + sampleLog + `]}`, 1, ""},
		{"result first", `{"result":[` + sampleLog + `,` + sampleLog + `],"id":1,"jsonrpc":"2.0"}`, 2, ""},
		{"pretty printed", "{\n  \"jsonrpc\": \"2.0\",\n  \"id\": 1,\n  \"result\": [\n    " + strings.ReplaceAll(sampleLog, `":`, `" : `) + "\n  ]\n}\n", 1, ""},
		{"empty", `{"jsonrpc":"2.0","id":1,"result":[]}`, 0, ""},
		{"unknown fields with escapes", `{"jsonrpc":"2.0","id":1,"extra":{"a":["x\"]}",1,true,null]},"result":[` + strings.Replace(sampleLog, `"removed":false`, `"removed":false,"note":"say \"hi\" \\ ]}"`, 1) + `]}`, 1, ""},
		{"error", `{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"query returned more than 10000 results"}}`, 0, "more than 10000 results"},
		{"null result", `{"jsonrpc":"2.0","id":1,"result":null}`, 0, "neither result nor error"},
		{"missing field", `{"jsonrpc":"2.0","id":1,"result":[` + strings.Replace(sampleLog, `"logIndex":"0x0",`, ``, 1) + `]}`, 0, "lacks a required field"},
		{"truncated", `{"jsonrpc":"2.0","id":1,"result":[` + sampleLog[:200], 0, "decoding logs"},
		{"bad quantity", `{"jsonrpc":"2.0","id":1,"result":[` + strings.Replace(sampleLog, `"blockNumber":"0x2"`, `"blockNumber":"2"`, 1) + `]}`, 0, "bad hex quantity"},
		{"not an object", `[]`, 0, "expected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeLogsResponse(tt.body, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(got) != tt.n {
				t.Fatalf("got %d logs, %v; want %d", len(got), err, tt.n)
			}
			sameAsReference(t, tt.body, got)
		})
	}
}

// streamed decodes body with decodeLogs through a window of size bytes,
// fed one byte per read, copying each log out as the consumer must.
func streamed(body string, size int) ([]rawLog, error) {
	var out []rawLog
	_, err := decodeLogs(iotest.OneByteReader(strings.NewReader(body)), make([]byte, size), func(l *rawLog) error {
		c := *l
		c.Address, c.Data, c.BlockHash, c.TxHash = strings.Clone(c.Address), strings.Clone(c.Data), strings.Clone(c.BlockHash), strings.Clone(c.TxHash)
		for i := range c.Topics {
			c.Topics[i] = strings.Clone(c.Topics[i])
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

// sameStreamed checks that decoding body as a stream, through windows far
// smaller than one log, gives what decoding it whole gives.
func sameStreamed(t *testing.T, body string) {
	t.Helper()
	want, wantErr := decodeLogsResponse(body, nil)
	for _, size := range []int{0, 1, 7, 64, 1000} {
		got, err := streamed(body, size)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("window %d: err %v, whole body: %v", size, err, wantErr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("window %d: decoded\n%+v\nwhole body:\n%+v", size, got, want)
		}
	}
}

func TestDecodeLogsStreams(t *testing.T) {
	many := strings.Repeat(sampleLog+",", 40) + sampleLog
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"result":[` + many + `]}`,
		`{"result":[` + sampleLog + `,` + sampleLog + `],"id":1,"jsonrpc":"2.0"}`,
		"{\n  \"jsonrpc\": \"2.0\",\n  \"id\": 1,\n  \"result\": [\n    " + strings.ReplaceAll(sampleLog, `":`, `" : `) + "\n  ]\n}\n",
		`{"jsonrpc":"2.0","id":1,"extra":{"a":["x\"]}",1,true,null]},"result":[` + strings.Replace(sampleLog, `"removed":false`, `"removed":false,"note":"say \"hi\" \\ ]}"`, 1) + `]}`,
		`{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"query returned more than 10000 results"}}`,
		`{"jsonrpc":"2.0","id":1,"result":[` + sampleLog[:200],
		`{"jsonrpc":"2.0","id":1,"result":[` + sampleLog + `,]}`,
		`{"jsonrpc":"2.0","id":1,"result":[]}`,
	} {
		sameStreamed(t, body)
	}
	// An error's message outlives the window it was read through.
	buf := make([]byte, 4096)
	_, err := decodeLogs(strings.NewReader(`{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"query returned more than 10000 results"}}`), buf, nil)
	clear(buf)
	if !strings.Contains(fmt.Sprint(err), "more than 10000 results") {
		t.Fatalf("error after the window was reused: %q", err)
	}
	// A log is emitted before the rest of the answer is read.
	var n int
	r := io.MultiReader(strings.NewReader(`{"result":[`+sampleLog+`,`), iotest.ErrReader(errors.New("connection reset")))
	_, err = decodeLogs(r, make([]byte, 64), func(*rawLog) error { n++; return nil })
	if n != 1 || err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("emitted %d logs, err %v; want 1 and the read error", n, err)
	}
}

func FuzzDecodeLogsResponse(f *testing.F) {
	f.Add(`{"jsonrpc":"2.0","id":1,"result":[` + sampleLog + `]}`)
	f.Add(`{"jsonrpc":"2.0","id":1,"result":[]}`)
	f.Add(`{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"x"}}`)
	f.Fuzz(func(t *testing.T, body string) {
		sameStreamed(t, body)
		got, err := decodeLogsResponse(body, nil)
		if err != nil {
			return
		}
		sameAsReference(t, body, got)
		for i := range got {
			// Whatever decodes must be safe to turn into a transfer, and
			// only hex fields may ever reach ClickHouse.
			tr, ok, err := transfer(&got[i], 0)
			if err == nil && ok {
				for _, f := range []string{tr.Token, tr.From, tr.To} {
					if !isHex(f, 40) {
						t.Fatalf("log %d: transfer with non-hex address %q", i, f)
					}
				}
				if !isHex(tr.BlockHash, 64) || !isHex(tr.TxHash, 64) {
					t.Fatalf("log %d: transfer with non-hex hash %+v", i, tr)
				}
			}
		}
	})
}

func TestTransferFilter(t *testing.T) {
	body := `{"result":[` + sampleLog + `]}`
	logs, err := decodeLogsResponse(body, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr, ok, err := transfer(&logs[0], 1700000000)
	if err != nil || !ok {
		t.Fatalf("transfer: %v %v", ok, err)
	}
	if tr.From != "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266" || tr.To != "0x70997970c51812dc3a010c7d01b50e0d17dc79c8" ||
		tr.Amount != "10000000" || tr.Token != "0x5fbdb2315678afecb367f032d93f642f64180aa3" || tr.BlockNumber != 2 || tr.BlockTime != 1700000000 {
		t.Errorf("transfer = %+v", tr)
	}
	// ERC-721: the same topic0 with the id as a fourth topic and no data.
	nft := logs[0]
	nft.Topics[3], nft.NTopics, nft.Data = nft.Topics[2], 4, "0x"
	if _, ok, _ := transfer(&nft, 0); ok {
		t.Error("an ERC-721 transfer was counted as ERC-20")
	}
	short := logs[0]
	short.Data = "0x00"
	if _, ok, _ := transfer(&short, 0); ok {
		t.Error("a transfer with 1-byte data was counted")
	}
	upper := logs[0]
	upper.Address = strings.ToUpper(upper.Address[2:])
	upper.Address = "0x" + upper.Address
	if tr, ok, err := transfer(&upper, 0); !ok || err != nil || tr.Token != logs[0].Address {
		t.Errorf("uppercase address not normalised: %+v %v", tr, err)
	}
}
