// Package evm reads ERC-20 transfers and blocks from an EVM JSON-RPC node for
// the chain-agnostic indexer.
package evm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

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
	// buffers holds the decoders' windows (*[]byte) between calls.
	buffers sync.Pool
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
// Logs are decoded as they arrive and only their transfers are kept.
func (s *Source) Fetch(ctx context.Context, from, to uint64) (*indexer.Range, error) {
	var hs []*header
	logs := newLogSet(from, to)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { hs, err = s.headers(gctx, from, to); return err })
	g.Go(func() error { return s.logsRange(gctx, from, to, logs) })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i, h := range hs {
		if hh := logs.hashes[i]; hh != "" && hh != h.Hash && !strings.EqualFold(hh, h.Hash) {
			return nil, fmt.Errorf("log of block %d has hash %s, header has %s: %w", h.Number, hh, h.Hash, indexer.ErrNotReady)
		}
	}
	for i, h := range hs {
		if logs.counts[i] > 0 || !types.BytesToBloom(h.Bloom).Test(transferTopicBytes) {
			continue
		}
		logs.only = h
		if err := s.logsByHash(ctx, h.Hash, logs); err != nil {
			return nil, err
		}
		if logs.counts[i] == 0 {
			// Still nothing: either a bloom false positive or a node that
			// keeps answering empty. The block's receipts settle it.
			again, err := s.logsFromReceipts(ctx, h.Hash)
			if err != nil {
				return nil, err
			}
			for j := range again {
				if err := logs.add(&again[j]); err != nil {
					return nil, err
				}
			}
		}
		logs.only = nil
	}
	rg := &indexer.Range{Blocks: make([]indexer.Block, len(hs)), Transfers: logs.transfers}
	for i, h := range hs {
		rg.Blocks[i] = h.block()
	}
	for i := range rg.Transfers {
		rg.Transfers[i].BlockTime = rg.Blocks[rg.Transfers[i].BlockNumber-from].Time
	}
	return rg, nil
}

var transferTopicBytes = hexutil.MustDecode(TransferTopic)

// logsRange decodes the Transfer logs of from..to into logs.
func (s *Source) logsRange(ctx context.Context, from, to uint64, logs *logSet) error {
	params := `[{"fromBlock":"` + hexutil.EncodeUint64(from) + `","toBlock":"` + hexutil.EncodeUint64(to) + `","topics":["` + TransferTopic + `"]}]`
	before := logs.logs
	err := s.getLogs(ctx, params, logs)
	// Split only an answer that added nothing: a split range must not add
	// its logs twice.
	if err == nil || from == to || !tooLarge(err) || logs.logs != before {
		return err
	}
	// The provider refused the range as too large: split it, never skip it.
	mid := from + (to-from)/2
	if err := s.logsRange(ctx, from, mid, logs); err != nil {
		return err
	}
	return s.logsRange(ctx, mid+1, to, logs)
}

func (s *Source) logsByHash(ctx context.Context, hash string, logs *logSet) error {
	return s.getLogs(ctx, `[{"blockHash":"`+hash+`","topics":["`+TransferTopic+`"]}]`, logs)
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

// getLogs posts one eth_getLogs call and decodes it with the lean decoder
// into logs. A throttled call is retried here a few times with jittered
// backoff, so a range split into many calls still completes under a rate
// limit; anything else goes back to the runner, which retries the whole
// range.
func (s *Source) getLogs(ctx context.Context, params string, logs *logSet) error {
	for attempt := 1; ; attempt++ {
		err := s.getLogsOnce(ctx, params, logs)
		s.count("eth_getLogs", 1, err)
		if err == nil || !errors.Is(err, errThrottled) || attempt == 6 {
			return err
		}
		d := 50 * time.Millisecond << attempt
		t := time.NewTimer(d/2 + time.Duration(rand.Int64N(int64(d/2))))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// readBufferSize is the decoder's window over an eth_getLogs answer (a few
// hundred logs); it is reused from call to call.
const readBufferSize = 256 << 10

// logBytes is about the smallest a Transfer log is in an eth_getLogs answer,
// to size the transfer list from the answer's length.
const logBytes = 560

func (s *Source) getLogsOnce(ctx context.Context, params string, logs *logSet) error {
	body := `{"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":` + params + `}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("eth_getLogs: %w", err)
	}
	defer func() {
		// Read to the end (within reason) so the connection is reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
	}()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return fmt.Errorf("eth_getLogs: http %d: %w", resp.StatusCode, errThrottled)
	default:
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 201))
		if err != nil {
			return fmt.Errorf("eth_getLogs: reading response: %w", err)
		}
		return fmt.Errorf("eth_getLogs: http %d: %s", resp.StatusCode, truncate(raw, 200))
	}
	if resp.ContentLength > 0 {
		logs.reserve(int(min(resp.ContentLength, 1<<30) / logBytes))
	}
	bp, _ := s.buffers.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, readBufferSize)
		bp = &b
	}
	*bp, err = decodeLogs(resp.Body, *bp, logs.add)
	if cap(*bp) <= 4*readBufferSize { // an outsized window is not kept
		s.buffers.Put(bp)
	}
	if err != nil {
		return fmt.Errorf("eth_getLogs: %w", err)
	}
	return nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return strconv.Quote(string(b[:n])) + "…"
	}
	return strconv.Quote(string(b))
}

var _ indexer.Source = (*Source)(nil)
