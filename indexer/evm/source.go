// Package evm reads ERC-20 transfers and blocks from an EVM JSON-RPC node for
// the chain-agnostic indexer.
package evm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/settle-dev/settle/indexer"
	"github.com/settle-dev/settle/internal/redact"
)

// Config configures a Source.
type Config struct {
	URL       string
	ChainName string
	// Registerer receives the RPC metrics; nil means none.
	Registerer prometheus.Registerer
	// HTTPClient is used for every call; default: 30s timeout.
	HTTPClient *http.Client
}

// Source implements indexer.Source over JSON-RPC. eth_getLogs, the hot
// path, goes through its own lean request and decoder; everything else uses
// go-ethereum's rpc client.
type Source struct {
	url      string
	http     *http.Client
	rpc      *rpc.Client
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
}

// New returns a Source for a node URL (http or https).
func New(ctx context.Context, cfg Config) (*Source, error) {
	if !strings.HasPrefix(cfg.URL, "http://") && !strings.HasPrefix(cfg.URL, "https://") {
		return nil, fmt.Errorf("evm source: rpc url %q must be http(s)", redact.Text(cfg.URL))
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	}
	c, err := rpc.DialOptions(ctx, cfg.URL, rpc.WithHTTPClient(hc))
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", redact.Text(cfg.URL), err)
	}
	labels := prometheus.Labels{"chain": cfg.ChainName}
	s := &Source{
		url:  cfg.URL,
		http: hc,
		rpc:  c,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "settle_indexer_rpc_requests_total", ConstLabels: labels,
			Help: "JSON-RPC calls by method (a batch counts each call)."}, []string{"method"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "settle_indexer_rpc_errors_total", ConstLabels: labels,
			Help: "Failed JSON-RPC calls by method."}, []string{"method"}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.requests, s.errors)
	}
	return s, nil
}

// Close releases the client.
func (s *Source) Close() { s.rpc.Close() }

func (s *Source) count(method string, n int, err error) {
	s.requests.WithLabelValues(method).Add(float64(n))
	if err != nil {
		s.errors.WithLabelValues(method).Inc()
	}
}

// ChainID returns the node's chain id, to check the configuration.
func (s *Source) ChainID(ctx context.Context) (uint64, error) {
	var id hexutil.Uint64
	err := s.rpc.CallContext(ctx, &id, "eth_chainId")
	s.count("eth_chainId", 1, err)
	if err != nil {
		return 0, fmt.Errorf("eth_chainId: %w", err)
	}
	return uint64(id), nil
}

// Head implements indexer.Source.
func (s *Source) Head(ctx context.Context) (uint64, error) {
	var n hexutil.Uint64
	err := s.rpc.CallContext(ctx, &n, "eth_blockNumber")
	s.count("eth_blockNumber", 1, err)
	if err != nil {
		return 0, fmt.Errorf("eth_blockNumber: %w", err)
	}
	return uint64(n), nil
}

type header struct {
	Number     hexutil.Uint64 `json:"number"`
	Hash       string         `json:"hash"`
	ParentHash string         `json:"parentHash"`
	Time       hexutil.Uint64 `json:"timestamp"`
	Bloom      hexutil.Bytes  `json:"logsBloom"`
}

func (h *header) block() indexer.Block {
	return indexer.Block{Number: uint64(h.Number), Hash: strings.ToLower(h.Hash), ParentHash: strings.ToLower(h.ParentHash), Time: uint32(h.Time)}
}

// Block implements indexer.Source.
func (s *Source) Block(ctx context.Context, number uint64) (indexer.Block, error) {
	var h *header
	err := s.rpc.CallContext(ctx, &h, "eth_getBlockByNumber", hexutil.EncodeUint64(number), false)
	s.count("eth_getBlockByNumber", 1, err)
	if err != nil {
		return indexer.Block{}, fmt.Errorf("eth_getBlockByNumber(%d): %w", number, err)
	}
	if h == nil {
		return indexer.Block{}, fmt.Errorf("block %d: %w", number, indexer.ErrNotReady)
	}
	return h.block(), nil
}

// headers fetches from..to in one batch and checks that they form a chain.
func (s *Source) headers(ctx context.Context, from, to uint64) ([]*header, error) {
	hs := make([]*header, to-from+1)
	batch := make([]rpc.BatchElem, len(hs))
	for i := range batch {
		batch[i] = rpc.BatchElem{Method: "eth_getBlockByNumber", Args: []any{hexutil.EncodeUint64(from + uint64(i)), false}, Result: &hs[i]}
	}
	err := s.rpc.BatchCallContext(ctx, batch)
	s.count("eth_getBlockByNumber", len(batch), err)
	if err != nil {
		return nil, fmt.Errorf("fetching headers %d-%d: %w", from, to, err)
	}
	for i, h := range hs {
		n := from + uint64(i)
		if batch[i].Error != nil {
			s.errors.WithLabelValues("eth_getBlockByNumber").Inc()
			return nil, fmt.Errorf("fetching header %d: %w", n, batch[i].Error)
		}
		// A null header is a block the node has not seen (a lagging or
		// lying backend): never index past it.
		if h == nil {
			return nil, fmt.Errorf("header %d: %w", n, indexer.ErrNotReady)
		}
		if uint64(h.Number) != n || len(h.Bloom) != types.BloomByteLength {
			return nil, fmt.Errorf("node answered block %d (bloom %d bytes) for %d", h.Number, len(h.Bloom), n)
		}
		if i > 0 && !strings.EqualFold(h.ParentHash, hs[i-1].Hash) {
			return nil, fmt.Errorf("headers %d-%d do not link (reorg during fetch): %w", n-1, n, indexer.ErrNotReady)
		}
	}
	return hs, nil
}

// Fetch implements indexer.Source: headers and Transfer logs for from..to,
// fetched concurrently, then cross-checked: every log must carry the hash of
// the header at its height, and a block whose bloom filter admits a Transfer
// but for which the range query returned none is asked again by block hash,
// so an empty or partial eth_getLogs answer cannot make a block look empty.
func (s *Source) Fetch(ctx context.Context, from, to uint64) (*indexer.Range, error) {
	var (
		hs   []*header
		logs []rawLog
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { hs, err = s.headers(gctx, from, to); return err })
	g.Go(func() (err error) { logs, err = s.logsRange(gctx, from, to); return err })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	byBlock := make([]int, len(hs)) // Transfer-topic logs per block
	for i := range logs {
		l := &logs[i]
		if l.BlockNumber < from || l.BlockNumber > to {
			return nil, fmt.Errorf("eth_getLogs(%d-%d) returned a log of block %d", from, to, l.BlockNumber)
		}
		if hh := hs[l.BlockNumber-from].Hash; l.BlockHash != hh && !strings.EqualFold(l.BlockHash, hh) {
			return nil, fmt.Errorf("log of block %d has hash %s, header has %s: %w", l.BlockNumber, l.BlockHash, hs[l.BlockNumber-from].Hash, indexer.ErrNotReady)
		}
		if l.Removed {
			return nil, fmt.Errorf("node returned a removed log in block %d: %w", l.BlockNumber, indexer.ErrNotReady)
		}
		byBlock[l.BlockNumber-from]++
	}
	for i, h := range hs {
		if byBlock[i] > 0 || !types.BytesToBloom(h.Bloom).Test(transferTopicBytes) {
			continue
		}
		again, err := s.logsByHash(ctx, h.Hash)
		if err != nil {
			return nil, err
		}
		if len(again) == 0 {
			// Still nothing: either a bloom false positive or a node that
			// keeps answering empty. The block's receipts settle it.
			if again, err = s.logsFromReceipts(ctx, h.Hash); err != nil {
				return nil, err
			}
		}
		for j := range again {
			if !strings.EqualFold(again[j].BlockHash, h.Hash) {
				return nil, fmt.Errorf("eth_getLogs(blockHash %s) returned a log of %s", h.Hash, again[j].BlockHash)
			}
		}
		logs = append(logs, again...)
	}
	rg := &indexer.Range{Blocks: make([]indexer.Block, len(hs))}
	for i, h := range hs {
		rg.Blocks[i] = h.block()
	}
	rg.Transfers = make([]indexer.Transfer, 0, len(logs))
	arena := make([]byte, 0, len(logs)*(2*42+24))
	for i := range logs {
		t, ok, a, err := appendTransfer(arena, &logs[i], rg.Blocks[logs[i].BlockNumber-from].Time)
		if err != nil {
			return nil, err
		}
		arena = a
		if ok {
			rg.Transfers = append(rg.Transfers, t)
		}
	}
	return rg, nil
}

var transferTopicBytes = hexutil.MustDecode(TransferTopic)

// transfer turns a log into an ERC-20 transfer. Logs that share the topic but
// are not ERC-20 transfers (ERC-721's four topics, malformed data) are
// skipped.
func transfer(l *rawLog, blockTime uint32) (indexer.Transfer, bool, error) {
	t, ok, _, err := appendTransfer(nil, l, blockTime)
	return t, ok, err
}

// appendTransfer is transfer with the strings it builds (the two addresses
// and the decimal amount) written into one growing arena instead of three
// allocations per log. Bytes behind len(arena) are never rewritten, so the
// strings stay valid when append moves the arena.
func appendTransfer(arena []byte, l *rawLog, blockTime uint32) (indexer.Transfer, bool, []byte, error) {
	if l.NTopics != 3 || l.Topics[0] != TransferTopic || len(l.Data) != 66 || len(l.Topics[1]) != 66 || len(l.Topics[2]) != 66 {
		return indexer.Transfer{}, false, arena, nil
	}
	start := len(arena)
	arena, err := appendUint256Decimal(arena, l.Data)
	if err != nil {
		return indexer.Transfer{}, false, arena[:start], nil // not a uint256: not an ERC-20 transfer
	}
	amount := arenaString(arena, start)
	fromAt := len(arena)
	arena = append(append(arena, "0x"...), l.Topics[1][26:]...)
	toAt := len(arena)
	arena = append(append(arena, "0x"...), l.Topics[2][26:]...)
	t := indexer.Transfer{
		BlockNumber: l.BlockNumber,
		BlockHash:   l.BlockHash,
		BlockTime:   blockTime,
		TxHash:      l.TxHash,
		LogIndex:    uint32(l.LogIndex),
		Token:       l.Address,
		From:        arenaString(arena[:toAt], fromAt),
		To:          arenaString(arena, toAt),
		Amount:      amount,
	}
	// Nodes send lowercase hex; anything else is normalised (rare, so the
	// fast path only validates).
	if !isHex(t.BlockHash, 64) || !isHex(t.TxHash, 64) || !isHex(t.Token, 40) || !isHex(t.From, 40) || !isHex(t.To, 40) {
		t.BlockHash, t.TxHash, t.Token = strings.ToLower(t.BlockHash), strings.ToLower(t.TxHash), strings.ToLower(t.Token)
		t.From, t.To = strings.ToLower(t.From), strings.ToLower(t.To)
		if !isHex(t.BlockHash, 64) || !isHex(t.TxHash, 64) || !isHex(t.Token, 40) || !isHex(t.From, 40) || !isHex(t.To, 40) {
			return indexer.Transfer{}, false, arena, fmt.Errorf("malformed log %s/%d", l.TxHash, l.LogIndex)
		}
	}
	return t, true, arena, nil
}

func arenaString(arena []byte, start int) string {
	if len(arena) == start {
		return ""
	}
	return unsafe.String(&arena[start], len(arena)-start)
}

func (s *Source) logsRange(ctx context.Context, from, to uint64) ([]rawLog, error) {
	params := `[{"fromBlock":"` + hexutil.EncodeUint64(from) + `","toBlock":"` + hexutil.EncodeUint64(to) + `","topics":["` + TransferTopic + `"]}]`
	logs, err := s.getLogs(ctx, params)
	if err == nil || from == to || !tooLarge(err) {
		return logs, err
	}
	// The provider refused the range as too large: split it, never skip it.
	mid := from + (to-from)/2
	lo, err := s.logsRange(ctx, from, mid)
	if err != nil {
		return nil, err
	}
	hi, err := s.logsRange(ctx, mid+1, to)
	if err != nil {
		return nil, err
	}
	return append(lo, hi...), nil
}

func (s *Source) logsByHash(ctx context.Context, hash string) ([]rawLog, error) {
	return s.getLogs(ctx, `[{"blockHash":"`+hash+`","topics":["`+TransferTopic+`"]}]`)
}

// logsFromReceipts returns the Transfer-topic logs of a block's receipts.
func (s *Source) logsFromReceipts(ctx context.Context, hash string) ([]rawLog, error) {
	var receipts []struct {
		Logs []struct {
			Address     string         `json:"address"`
			Topics      []string       `json:"topics"`
			Data        string         `json:"data"`
			BlockNumber hexutil.Uint64 `json:"blockNumber"`
			BlockHash   string         `json:"blockHash"`
			TxHash      string         `json:"transactionHash"`
			LogIndex    hexutil.Uint64 `json:"logIndex"`
		} `json:"logs"`
	}
	err := s.rpc.CallContext(ctx, &receipts, "eth_getBlockReceipts", hash)
	s.count("eth_getBlockReceipts", 1, err)
	if err != nil {
		return nil, fmt.Errorf("eth_getBlockReceipts(%s): %w", hash, err)
	}
	var out []rawLog
	for _, r := range receipts {
		for _, l := range r.Logs {
			if len(l.Topics) == 0 || !strings.EqualFold(l.Topics[0], TransferTopic) {
				continue
			}
			rl := rawLog{Address: l.Address, NTopics: len(l.Topics), Data: l.Data, BlockNumber: uint64(l.BlockNumber),
				BlockHash: l.BlockHash, TxHash: l.TxHash, LogIndex: uint64(l.LogIndex)}
			copy(rl.Topics[:], l.Topics)
			rl.Topics[0] = TransferTopic
			out = append(out, rl)
		}
	}
	return out, nil
}

// tooLarge recognises the "narrow your query" answers of common providers.
// Only JSON-RPC errors count: an HTTP 429 is rate limiting, which the
// runner's backoff handles, not a reason to split.
func tooLarge(err error) bool {
	var re *rpcError
	if !errors.As(err, &re) {
		return false
	}
	msg := strings.ToLower(re.Message)
	for _, s := range []string{"too many", "too large", "range", "limit exceeded", "response size", "10000 results", "exceed"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// errThrottled marks an HTTP 429/503 answer: the provider asks us to slow
// down.
var errThrottled = errors.New("provider is rate limiting")

// getLogs posts one eth_getLogs call and decodes it with the lean decoder.
// A throttled call is retried here a few times with jittered backoff, so a
// range split into many calls still completes under a rate limit; anything
// else goes back to the runner, which retries the whole range.
func (s *Source) getLogs(ctx context.Context, params string) ([]rawLog, error) {
	for attempt := 1; ; attempt++ {
		logs, err := s.getLogsOnce(ctx, params)
		s.count("eth_getLogs", 1, err)
		if err == nil || !errors.Is(err, errThrottled) || attempt == 6 {
			return logs, err
		}
		d := 50 * time.Millisecond << attempt
		t := time.NewTimer(d/2 + time.Duration(rand.Int64N(int64(d/2))))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

func (s *Source) getLogsOnce(ctx context.Context, params string) ([]rawLog, error) {
	body := `{"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":` + params + `}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("eth_getLogs: %w", err)
	}
	defer resp.Body.Close()
	raw, err := readBody(resp)
	if err != nil {
		return nil, fmt.Errorf("eth_getLogs: reading response: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return nil, fmt.Errorf("eth_getLogs: http %d: %w", resp.StatusCode, errThrottled)
	default:
		return nil, fmt.Errorf("eth_getLogs: http %d: %s", resp.StatusCode, truncate(raw, 200))
	}
	// The buffer is never written again, so the decoded strings may point
	// into it without a copy.
	logs, err := decodeLogsResponse(unsafe.String(unsafe.SliceData(raw), len(raw)), nil)
	if err != nil {
		return nil, fmt.Errorf("eth_getLogs: %w", err)
	}
	return logs, nil
}

func readBody(resp *http.Response) ([]byte, error) {
	if resp.ContentLength > 0 && resp.ContentLength < 1<<31 {
		buf := make([]byte, resp.ContentLength)
		_, err := io.ReadFull(resp.Body, buf)
		return buf, err
	}
	var b bytes.Buffer
	_, err := b.ReadFrom(resp.Body)
	return b.Bytes(), err
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return strconv.Quote(string(b[:n])) + "…"
	}
	return strconv.Quote(string(b))
}

var _ indexer.Source = (*Source)(nil)
