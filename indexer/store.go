package indexer

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Cursor is the last block whose data ClickHouse has accepted. Hash is empty
// before the first block is indexed.
type Cursor struct {
	Number uint64
	Hash   string
}

// pgStore keeps cursors, the recent-block window and pending orphans.
type pgStore struct {
	pool    *pgxpool.Pool
	chainID uint64
}

func (s *pgStore) cursor(ctx context.Context) (Cursor, bool, error) {
	var c Cursor
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT number, hash FROM indexer_cursors WHERE chain_id = $1`, int64(s.chainID)).Scan(&n, &c.Hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return Cursor{}, false, nil
	}
	if err != nil {
		return Cursor{}, false, fmt.Errorf("reading cursor: %w", err)
	}
	c.Number = uint64(n)
	return c, true, nil
}

// nextVersion returns a fresh ClickHouse row version.
func (s *pgStore) nextVersion(ctx context.Context) (uint64, error) {
	var v int64
	if err := s.pool.QueryRow(ctx, `SELECT nextval('clickhouse_version_seq')`).Scan(&v); err != nil {
		return 0, fmt.Errorf("drawing row version: %w", err)
	}
	return uint64(v), nil
}

// advance records blocks as indexed and moves the cursor to the last one,
// keeping only the newest window blocks for reorg detection.
func (s *pgStore) advance(ctx context.Context, blocks []Block, window uint64) error {
	if len(blocks) == 0 {
		return nil
	}
	last := blocks[len(blocks)-1]
	// Only the newest window blocks are ever needed again.
	keep := blocks
	if uint64(len(keep)) > window {
		keep = keep[uint64(len(keep))-window:]
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows := make([][]any, len(keep))
		for i, b := range keep {
			rows[i] = []any{int64(s.chainID), int64(b.Number), b.Hash, b.ParentHash}
		}
		// A re-indexed height replaces whatever was stored for it.
		if _, err := tx.Exec(ctx, `DELETE FROM indexer_blocks WHERE chain_id = $1 AND number >= $2`, int64(s.chainID), int64(keep[0].Number)); err != nil {
			return fmt.Errorf("clearing block window: %w", err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"indexer_blocks"}, []string{"chain_id", "number", "hash", "parent_hash"}, pgx.CopyFromRows(rows)); err != nil {
			return fmt.Errorf("storing block window: %w", err)
		}
		if last.Number >= window {
			if _, err := tx.Exec(ctx, `DELETE FROM indexer_blocks WHERE chain_id = $1 AND number <= $2`, int64(s.chainID), int64(last.Number-window)); err != nil {
				return fmt.Errorf("pruning block window: %w", err)
			}
		}
		const q = `INSERT INTO indexer_cursors (chain_id, number, hash) VALUES ($1, $2, $3)
			ON CONFLICT (chain_id) DO UPDATE SET number = excluded.number, hash = excluded.hash, updated_at = now()`
		if _, err := tx.Exec(ctx, q, int64(s.chainID), int64(last.Number), last.Hash); err != nil {
			return fmt.Errorf("moving cursor: %w", err)
		}
		return nil
	})
}

// storedHash returns the hash stored for a height of the window.
func (s *pgStore) storedBlock(ctx context.Context, number uint64) (Block, bool, error) {
	b := Block{Number: number}
	err := s.pool.QueryRow(ctx, `SELECT hash, parent_hash FROM indexer_blocks WHERE chain_id = $1 AND number = $2`,
		int64(s.chainID), int64(number)).Scan(&b.Hash, &b.ParentHash)
	if errors.Is(err, pgx.ErrNoRows) {
		return Block{}, false, nil
	}
	if err != nil {
		return Block{}, false, fmt.Errorf("reading stored block %d: %w", number, err)
	}
	return b, true, nil
}

// rewind moves the cursor back to the fork point and records the orphaned
// blocks for tombstoning, in one transaction.
func (s *pgStore) rewind(ctx context.Context, fork Block, orphans []Block) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, o := range orphans {
			if _, err := tx.Exec(ctx, `INSERT INTO indexer_orphans (chain_id, number, hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
				int64(s.chainID), int64(o.Number), o.Hash); err != nil {
				return fmt.Errorf("recording orphan %d: %w", o.Number, err)
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM indexer_blocks WHERE chain_id = $1 AND number > $2`, int64(s.chainID), int64(fork.Number)); err != nil {
			return fmt.Errorf("dropping orphaned window: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE indexer_cursors SET number = $2, hash = $3, updated_at = now() WHERE chain_id = $1`,
			int64(s.chainID), int64(fork.Number), fork.Hash); err != nil {
			return fmt.Errorf("rewinding cursor: %w", err)
		}
		return nil
	})
}

func (s *pgStore) orphans(ctx context.Context) ([]Block, error) {
	rows, err := s.pool.Query(ctx, `SELECT number, hash FROM indexer_orphans WHERE chain_id = $1 ORDER BY number`, int64(s.chainID))
	if err != nil {
		return nil, fmt.Errorf("reading orphans: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Block, error) {
		var b Block
		var n int64
		err := r.Scan(&n, &b.Hash)
		b.Number = uint64(n)
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading orphans: %w", err)
	}
	return out, nil
}

func (s *pgStore) clearOrphans(ctx context.Context, orphans []Block) error {
	for _, o := range orphans {
		if _, err := s.pool.Exec(ctx, `DELETE FROM indexer_orphans WHERE chain_id = $1 AND number = $2 AND hash = $3`,
			int64(s.chainID), int64(o.Number), o.Hash); err != nil {
			return fmt.Errorf("clearing orphan %d: %w", o.Number, err)
		}
	}
	return nil
}
