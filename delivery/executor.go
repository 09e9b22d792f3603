// Package delivery executes the payouts the reconciler schedules and
// sweeps receivers into the treasury. It runs as `settle delivery`, holds
// the master seed, and never imports the reconciler.
//
// The executor is chain-agnostic: it claims payouts, moves them through
// their statuses (pending, sent, mined or reverted, needs_attention),
// stores each signed transaction in Postgres before it is broadcast,
// follows it until its inclusion is final, writes ledger rows and exports
// metrics. What differs per chain family (nonces, fees and fee bumps,
// signing, receipts, finality, sweep signing) is a Driver's; delivery/evm
// is the EVM one (an ERC-20 transfer, or, for a destination with calldata,
// the funding and execute of a single-use SettleExecutor runner: see
// contracts/SettleExecutor.sol).
//
// Nothing is ever paid twice: a payout row is worked on only under its row
// lock (SELECT … FOR UPDATE SKIP LOCKED), a driver orders its signings
// (EVM: treasury_nonces under a row lock) in the transaction that stores
// the signed bytes, and a stored transaction is only ever re-broadcast
// byte for byte or replaced by the driver's Bump under the same nonce.
// Confirming a payout (the indexer saw the transfer and it is final) is
// the reconciler's job, not this package's.
package delivery

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/settle-dev/settle/delivery/driver"
	"github.com/settle-dev/settle/delivery/evm"
	"github.com/settle-dev/settle/internal/redact"
)

// ChainClient is what the EVM driver needs from a node; *ethclient.Client
// satisfies it.
type ChainClient = evm.Client

// Finality says when a block is final on an EVM chain: Depth blocks below
// the node's head, or, with Tag, at or below the node's "finalized" block.
type Finality = evm.Finality

// Token is a token whose treasury balance is exported as a gauge.
type Token struct {
	Address  common.Address
	Symbol   string
	Decimals uint8
}

// Config configures an Executor.
type Config struct {
	// Postgres holds the payouts and treasury_nonces tables.
	Postgres *pgxpool.Pool
	// Chains are the chains to pay on, by chain id; payouts on other chains
	// are left alone.
	Chains map[uint64]ChainClient
	// Finality per chain id decides when a receipt is final: until then
	// the executor watches its block, and a reverted call is not refunded
	// before its revert is final. A chain without an entry uses a depth of
	// evm.DefaultFinalityDepth (12) blocks.
	Finality map[uint64]Finality
	// Executors are the SettleExecutor contracts per chain id that run
	// merchant calldata (contracts/SettleExecutor.sol). A chain without
	// one pays plain transfers only; a call payout there needs attention.
	Executors map[uint64]common.Address
	// CallGas per chain id is the gas a merchant call gets, and so the
	// most gas a hostile destination can burn per payout; default
	// evm.DefaultCallGas.
	CallGas map[uint64]uint64
	// MaxFeePerGas per chain id is the ceiling of every transaction's fee
	// cap in wei; default evm.DefaultMaxFeePerGas. A transaction stuck at the
	// ceiling needs attention instead of being bumped without end.
	MaxFeePerGas map[uint64]*big.Int
	// StuckAfter is how long a payout may keep failing before it needs
	// attention (a failing gas estimate, a treasury out of gas or
	// tokens); default 10m.
	StuckAfter time.Duration
	// ReceiverKey derives the private key of the receiver with a
	// derivation index, for sweeping; nil turns sweeping off.
	ReceiverKey func(index uint32) (*ecdsa.PrivateKey, error)
	// SweepMin per chain id and token is the smallest sum of a receiver's
	// final, credited deposits worth sweeping, in the token's smallest
	// unit (below it the gas would cost more than it moves). A token
	// without an entry is never swept; one with an entry must be in Tokens.
	SweepMin map[uint64]map[common.Address]*big.Int
	// Tokens are the tokens per chain whose treasury balance is exported.
	Tokens map[uint64][]Token
	// Treasury signs every payout: one key, the same address on every EVM
	// chain.
	Treasury *ecdsa.PrivateKey
	// Logger receives one info line per signed, mined or reverted payout
	// transaction, and warnings for what is retried; nil discards.
	Logger *slog.Logger
	// Redact removes the chains' RPC URLs (which carry the providers' API
	// keys) from every error stored in payouts.error and sweeps.error;
	// nil still removes the secret parts of any http(s)/ws(s) URL.
	Redact *redact.Redactor
	// Registerer receives the metrics; nil means none.
	Registerer prometheus.Registerer
	// Interval is the loop period of Run; default 500ms.
	Interval time.Duration
	// RebroadcastAfter is how long a sent, unmined transaction waits before
	// its stored bytes are sent again; default 15s.
	RebroadcastAfter time.Duration
	// BumpAfter is how long a payout transaction may stay unmined before it
	// is replaced by one with the same nonce and higher fees; default 2m.
	BumpAfter time.Duration
	// WatchEvery is how often the receipt of a mined or reverted payout is
	// re-checked until it is final; default 2s. Watching costs node calls
	// per payout, so it must not crowd out new payouts.
	WatchEvery time.Duration
}

// Executor signs, stores, broadcasts and follows payout transactions. Any
// number of executors may share a database: they never work on the same
// payout at once and never sign two transactions with one nonce.
type Executor struct {
	cfg Config
	pg  *pgxpool.Pool
	// from is the treasury, in the form Postgres holds.
	from    string
	chains  map[uint64]Driver
	logger  *slog.Logger
	metrics *metrics
	// sweepMetrics count sweeps (sweep.go).
	sweepMetrics *sweepMetrics
	// tokens and sweepMin are cfg.Tokens and cfg.SweepMin by address in
	// the form Postgres holds.
	tokens   map[uint64][]driver.Token
	sweepMin map[uint64]map[string]*big.Int

	// mu guards lastSent, lastWatched and balancesAt.
	mu sync.Mutex
	// lastSent is when each stored transaction was last handed to a node
	// by this process. It is memory only on purpose: after a restart every
	// unmined transaction is re-broadcast at once.
	lastSent map[string]time.Time
	// lastWatched is when each payout's receipt was last re-checked by
	// this process.
	lastWatched map[int64]time.Time
	balancesAt  time.Time

	// skipBroadcast makes the executor stop after storing a signed
	// transaction, as if it crashed before broadcasting it (tests only).
	skipBroadcast bool
}

// New checks cfg and returns an Executor.
func New(cfg Config) (*Executor, error) {
	if cfg.Postgres == nil || cfg.Treasury == nil || len(cfg.Chains) == 0 {
		return nil, errors.New("delivery: Postgres, Treasury and at least one chain are required")
	}
	cfg.Interval = cmp.Or(cfg.Interval, 500*time.Millisecond)
	cfg.RebroadcastAfter = cmp.Or(cfg.RebroadcastAfter, 15*time.Second)
	cfg.BumpAfter = cmp.Or(cfg.BumpAfter, 2*time.Minute)
	cfg.WatchEvery = cmp.Or(cfg.WatchEvery, 2*time.Second)
	cfg.StuckAfter = cmp.Or(cfg.StuckAfter, 10*time.Minute)
	if cfg.Interval < 0 || cfg.RebroadcastAfter < 0 || cfg.BumpAfter < 0 || cfg.WatchEvery < 0 || cfg.StuckAfter < 0 {
		return nil, errors.New("delivery: Interval, RebroadcastAfter, BumpAfter, WatchEvery and StuckAfter must not be negative")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "delivery")
	chains := make(map[uint64]Driver, len(cfg.Chains))
	var from string
	for id, c := range cfg.Chains {
		if c == nil || id == 0 {
			return nil, fmt.Errorf("delivery: chain %d has no client", id)
		}
		dc := evm.Config{ChainID: id, Client: c, Finality: cfg.Finality[id], CallGas: cfg.CallGas[id],
			MaxFeePerGas: cfg.MaxFeePerGas[id], Treasury: cfg.Treasury, ReceiverKey: cfg.ReceiverKey,
			FinalTTL: cfg.Interval, Logger: logger}
		if a, ok := cfg.Executors[id]; ok {
			dc.Executor = &a
		}
		d, err := evm.NewDriver(dc)
		if err != nil {
			return nil, fmt.Errorf("delivery: %w", err)
		}
		chains[id], from = d, d.Treasury()
	}
	tokens := make(map[uint64][]driver.Token, len(cfg.Tokens))
	for id, list := range cfg.Tokens {
		for _, t := range list {
			tokens[id] = append(tokens[id], driver.Token{Address: addrText(t.Address), Symbol: t.Symbol, Decimals: t.Decimals})
		}
	}
	sweepMin := make(map[uint64]map[string]*big.Int, len(cfg.SweepMin))
	for id, mins := range cfg.SweepMin {
		sweepMin[id] = make(map[string]*big.Int, len(mins))
		for token, min := range mins {
			sweepMin[id][addrText(token)] = min
		}
	}
	for id, mins := range cfg.SweepMin {
		for token := range mins {
			if !slices.ContainsFunc(cfg.Tokens[id], func(t Token) bool { return t.Address == token }) {
				// The ledger records a sweep in the token's units.
				return nil, fmt.Errorf("delivery: chain %d: sweep threshold for token %s, which is not in Tokens", id, token.Hex())
			}
		}
	}
	for id := range cfg.Executors {
		if _, ok := chains[id]; !ok {
			return nil, fmt.Errorf("delivery: executor configured for chain %d, which has no client", id)
		}
	}
	for id := range cfg.Finality {
		if _, ok := chains[id]; !ok {
			return nil, fmt.Errorf("delivery: finality configured for chain %d, which has no client", id)
		}
	}
	for id := range cfg.Tokens {
		if _, ok := chains[id]; !ok {
			return nil, fmt.Errorf("delivery: tokens configured for chain %d, which has no client", id)
		}
	}
	return &Executor{
		cfg:          cfg,
		pg:           cfg.Postgres,
		from:         from,
		chains:       chains,
		logger:       logger,
		metrics:      newMetrics(cfg.Registerer),
		sweepMetrics: newSweepMetrics(cfg.Registerer),
		tokens:       tokens,
		sweepMin:     sweepMin,
		lastSent:     make(map[string]time.Time),
		lastWatched:  make(map[int64]time.Time),
	}, nil
}

// addrText is an EVM address of Config in the form Postgres holds.
func addrText(a common.Address) string { return strings.ToLower(a.Hex()) }

// Address is the treasury address that pays every payout.
func (e *Executor) Address() common.Address { return common.HexToAddress(e.from) }

// DeployExecutor deploys a SettleExecutor owned by the treasury on chain
// id and waits until it is mined and verified (see
// evm.Driver.DeployExecutor).
func (e *Executor) DeployExecutor(ctx context.Context, id uint64) (common.Address, error) {
	d, ok := e.chains[id].(interface {
		DeployExecutor(context.Context, *pgxpool.Pool, *slog.Logger) (common.Address, error)
	})
	if !ok {
		return common.Address{}, fmt.Errorf("chain %d is not configured for delivery, or its driver deploys no executor", id)
	}
	return d.DeployExecutor(ctx, e.pg, e.logger)
}

// redact removes RPC URLs' secrets from an error before it is stored:
// payouts.error and sweeps.error are read by operators and printed by
// `settle payouts list`.
func (e *Executor) redact(msg string) string { return e.cfg.Redact.String(msg) }

// Run works on open payouts every Interval until ctx is done, then returns
// nil.
func (e *Executor) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := e.RunOnce(ctx); err != nil && ctx.Err() == nil {
			e.logger.WarnContext(ctx, "payout pass failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Result counts what one pass did, so callers (and tests) can tell when
// work is done.
type Result struct {
	// Signed counts transactions signed and stored: transfers, approvals,
	// runner fundings and executes (fee bumps count as Bumped instead).
	Signed int
	// Broadcast counts first broadcasts a node accepted.
	Broadcast int
	// Rebroadcast counts stored bytes sent again.
	Rebroadcast int
	// Bumped counts replacements with higher fees.
	Bumped int
	// Mined and Reverted count payouts that reached those statuses.
	Mined    int
	Reverted int
	// Attention counts payouts moved to needs_attention.
	Attention int
	// Reorged counts mined or reverted payouts whose receipt's block a
	// reorg removed; they are followed again.
	Reorged int
	// Final counts receipts whose block became final.
	Final int
	// Waiting counts payouts that must wait (an executor on another host
	// holds what they need).
	Waiting int
	// Skipped counts open payouts another executor held locked.
	Skipped int
	// Errors counts payouts on which something failed; they are retried on
	// a later pass.
	Errors int
}

// Progress reports whether the pass changed anything on chain or in the
// database.
func (r Result) Progress() bool {
	return r.Signed+r.Broadcast+r.Rebroadcast+r.Bumped+r.Mined+r.Reverted+r.Attention+r.Reorged+r.Final > 0
}

func (r *Result) add(o Result) {
	r.Signed += o.Signed
	r.Broadcast += o.Broadcast
	r.Rebroadcast += o.Rebroadcast
	r.Bumped += o.Bumped
	r.Mined += o.Mined
	r.Reorged += o.Reorged
	r.Final += o.Final
	r.Reverted += o.Reverted
	r.Attention += o.Attention
	r.Waiting += o.Waiting
	r.Skipped += o.Skipped
	r.Errors += o.Errors
}

// RunOnce makes one pass over the open payouts of the configured chains.
// A failure on one payout is logged, counted and recorded on its row; only
// failures that stop the whole pass are returned.
func (e *Executor) RunOnce(ctx context.Context) (Result, error) {
	var res Result
	ids := make([]int64, 0, len(e.chains))
	for _, id := range slices.Sorted(maps.Keys(e.chains)) {
		if err := e.chains[id].Verify(ctx); err != nil {
			e.logger.ErrorContext(ctx, "chain client is not usable; skipping its payouts", "chain_id", id, "err", err)
			res.Errors++
			continue
		}
		ids = append(ids, int64(id))
	}
	e.updateBalances(ctx)
	e.updateAttention(ctx)
	if len(ids) == 0 {
		return res, nil
	}
	open, err := listOpen(ctx, e.pg, ids)
	if err != nil {
		return res, err
	}
	seen := make(map[string]bool)
	for _, o := range open {
		if ctx.Err() != nil {
			return res, nil
		}
		if !o.active && !e.watchDue(o.id, false) {
			continue // not even a claim: watched payouts can be many
		}
		res.add(e.process(ctx, o.id, seen))
	}
	// Sweeps come after payouts: the treasury's float pays merchants
	// first, and sweeping can wait a pass.
	e.sweepPass(ctx, ids, seen)
	e.forgetExcept(seen)
	return res, nil
}

// forgetExcept drops broadcast times of transactions this pass did not
// look at (mined, or now another executor's), so the map stays small.
func (e *Executor) forgetExcept(seen map[string]bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	maps.DeleteFunc(e.lastSent, func(h string, _ time.Time) bool { return !seen[h] })
	maps.DeleteFunc(e.lastWatched, func(_ int64, at time.Time) bool { return time.Since(at) > 10*e.cfg.WatchEvery })
}

// watchDue reports whether payout id's receipt was not re-checked within
// WatchEvery; with mark, a due receipt counts as checked from now.
func (e *Executor) watchDue(id int64, mark bool) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if at, ok := e.lastWatched[id]; ok && time.Since(at) < e.cfg.WatchEvery {
		return false
	}
	if mark {
		e.lastWatched[id] = time.Now()
	}
	return true
}

// dueForRebroadcast reports whether hash was never broadcast by this
// process or not within RebroadcastAfter, and marks it seen.
func (e *Executor) dueForRebroadcast(hash string, seen map[string]bool) bool {
	seen[hash] = true
	e.mu.Lock()
	defer e.mu.Unlock()
	at, ok := e.lastSent[hash]
	return !ok || time.Since(at) >= e.cfg.RebroadcastAfter
}

func (e *Executor) markSent(hash string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastSent[hash] = time.Now()
}
