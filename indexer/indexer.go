// Package indexer is the chain-agnostic block indexer: it reads a chain's
// blocks and token transfers from a Source, writes them to ClickHouse and
// keeps a cursor in Postgres. Per-chain sources live in subpackages (evm/,
// later tron/ and solana/) and never import this package.
//
// The invariants, in the order the loop relies on them:
//   - every block's parent hash is checked against the block before it (the
//     stored one, or the previous block of the same fetch); a mismatch is a
//     reorg, handled by walking back to the fork point;
//   - rows are written to ClickHouse before the cursor moves, and writing the
//     same rows again changes no FINAL result, so a crash anywhere loses
//     nothing and duplicates nothing;
//   - a range is never skipped: a failed fetch is retried, with backoff,
//     until it succeeds or the process stops.
package indexer

import (
	"context"
	"errors"
)

// Block is one block of the chain, hashes in the chain's canonical text
// form.
type Block struct {
	Number     uint64
	Hash       string
	ParentHash string
	Time       uint32 // unix seconds
}

// Transfer is one token transfer, identified by (block hash, tx hash, log
// index) within its chain.
type Transfer struct {
	BlockNumber uint64
	BlockHash   string
	BlockTime   uint32
	LogIndex    uint32
	TxHash      string
	Token       string
	From        string
	To          string
	// Amount is the exact raw amount in the token's smallest unit, in
	// decimal digits without leading zeros.
	Amount string
}

// Range is what a Source returns for a span of blocks: every block, in
// order, and every transfer in them.
type Range struct {
	Blocks    []Block
	Transfers []Transfer
}

// Source reads one chain.
type Source interface {
	// Head returns the number of the newest block the node has.
	Head(ctx context.Context) (uint64, error)
	// Fetch returns blocks from..to (inclusive) and their transfers. It
	// returns every block or an error: a block the node has not seen yet
	// is an error (ErrNotReady), never a shorter range. Transfers must be
	// proven to belong to the returned block hashes.
	Fetch(ctx context.Context, from, to uint64) (*Range, error)
	// Block returns the node's current block at a height, for reorg
	// walk-back.
	Block(ctx context.Context, number uint64) (Block, error)
}

// Sentinel errors a Source may return.
var (
	// ErrNotReady means the node has not seen a requested block yet (or
	// answered inconsistently); the fetch is retried later.
	ErrNotReady = errors.New("block not available yet")
	// ErrReorgTooDeep stops a chain's indexer: the chain forked below the
	// configured maximum depth, and history is not rewritten automatically.
	ErrReorgTooDeep = errors.New("reorg deeper than the configured maximum")
)
