package indexer

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// maxDecimal38Digits: amounts with more digits do not fit Decimal(38, 0)
// and are flagged amount_overflow (amount_raw stays exact).
const maxDecimal38Digits = 38

// chSink writes blocks, transfers, tombstones and reorg records to
// ClickHouse. Every insert names its columns (18.16 needs it) and appends
// whole columns at once: per-row interface dispatch would dominate the cost
// of a large backfill.
type chSink struct {
	conn    driver.Conn
	chainID uint64
	metrics *metrics
}

const insertTransfers = `INSERT INTO transfers (chain_id, block_number, block_hash, block_time, tx_hash, log_index,
	token, from_address, to_address, amount_raw, amount_overflow, deleted, version)`

func (s *chSink) writeTransfers(ctx context.Context, parts [][]Transfer, deleted uint8, version uint64) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n == 0 {
		return nil
	}
	var (
		chain    = make([]uint64, n)
		number   = make([]uint64, n)
		hash     = make([]string, n)
		btime    = make([]int64, n)
		tx       = make([]string, n)
		logIndex = make([]uint32, n)
		token    = make([]string, n)
		from     = make([]string, n)
		to       = make([]string, n)
		raw      = make([]string, n)
		overflow = make([]uint8, n)
		del      = make([]uint8, n)
		ver      = make([]uint64, n)
	)
	i := 0
	for _, ts := range parts {
		for j := range ts {
			t := &ts[j]
			chain[i], number[i], hash[i], btime[i] = s.chainID, t.BlockNumber, t.BlockHash, int64(t.BlockTime)
			tx[i], logIndex[i], token[i], from[i], to[i] = t.TxHash, t.LogIndex, t.Token, t.From, t.To
			raw[i], del[i], ver[i] = t.Amount, deleted, version
			if len(t.Amount) > maxDecimal38Digits {
				overflow[i] = 1
			}
			i++
		}
	}
	return s.insert(ctx, "transfers", insertTransfers, n,
		chain, number, hash, btime, tx, logIndex, token, from, to, raw, overflow, del, ver)
}

const insertBlocks = `INSERT INTO blocks (chain_id, number, hash, parent_hash, time, transfers, deleted, version)`

func (s *chSink) writeBlocks(ctx context.Context, bs []Block, counts map[uint64]uint32, deleted uint8, version uint64) error {
	if len(bs) == 0 {
		return nil
	}
	n := len(bs)
	chain, number, hash, parent := make([]uint64, n), make([]uint64, n), make([]string, n), make([]string, n)
	btime, transfers, del, ver := make([]int64, n), make([]uint32, n), make([]uint8, n), make([]uint64, n)
	for i, b := range bs {
		chain[i], number[i], hash[i], parent[i] = s.chainID, b.Number, b.Hash, b.ParentHash
		btime[i], transfers[i], del[i], ver[i] = int64(b.Time), counts[b.Number], deleted, version
	}
	return s.insert(ctx, "blocks", insertBlocks, n, chain, number, hash, parent, btime, transfers, del, ver)
}

func (s *chSink) insert(ctx context.Context, table, query string, rows int, columns ...any) error {
	start := time.Now()
	batch, err := s.conn.PrepareBatch(ctx, query)
	if err != nil {
		return fmt.Errorf("preparing %s insert: %w", table, err)
	}
	defer batch.Abort()
	for i, col := range columns {
		if err := batch.Column(i).Append(col); err != nil {
			return fmt.Errorf("appending %s column %d: %w", table, i, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("inserting %d rows into %s: %w", rows, table, err)
	}
	s.metrics.insertRows.WithLabelValues(table).Add(float64(rows))
	s.metrics.insertSeconds.WithLabelValues(table).Observe(time.Since(start).Seconds())
	return nil
}

// write stores one batch: transfers first, then blocks. The blocks table is
// what says a block was indexed, so it goes last.
func (s *chSink) write(ctx context.Context, b *batch, version uint64) error {
	counts := make(map[uint64]uint32, len(b.blocks))
	for _, ts := range b.transfers {
		for i := range ts {
			counts[ts[i].BlockNumber]++
		}
	}
	if err := s.writeTransfers(ctx, b.transfers, 0, version); err != nil {
		return err
	}
	return s.writeBlocks(ctx, b.blocks, counts, 0, version)
}

// tombstone marks every live row of the orphaned blocks deleted: it reads
// the stored rows (a tombstone needs a row's full key, and a reorg may move a
// transaction to another block) and writes them again with deleted = 1 and a
// higher version.
func (s *chSink) tombstone(ctx context.Context, orphans []Block, version uint64) error {
	if len(orphans) == 0 {
		return nil
	}
	lo, hi := orphans[0].Number, orphans[0].Number
	hashes := make([]string, len(orphans))
	for i, o := range orphans {
		lo, hi = min(lo, o.Number), max(hi, o.Number)
		hashes[i] = o.Hash
	}
	const qt = `SELECT block_number, block_hash, toUInt32(block_time), tx_hash, log_index, token, from_address, to_address, amount_raw
		FROM transfers FINAL
		WHERE chain_id = ? AND block_number BETWEEN ? AND ? AND has(?, block_hash) AND deleted = 0`
	rows, err := s.conn.Query(ctx, qt, s.chainID, lo, hi, hashes)
	if err != nil {
		return fmt.Errorf("reading orphaned transfers: %w", err)
	}
	var ts []Transfer
	for rows.Next() {
		var t Transfer
		if err := rows.Scan(&t.BlockNumber, &t.BlockHash, &t.BlockTime, &t.TxHash, &t.LogIndex, &t.Token, &t.From, &t.To, &t.Amount); err != nil {
			rows.Close()
			return fmt.Errorf("reading orphaned transfers: %w", err)
		}
		ts = append(ts, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading orphaned transfers: %w", err)
	}
	if err := s.writeTransfers(ctx, [][]Transfer{ts}, 1, version); err != nil {
		return err
	}
	const qb = `SELECT number, hash, parent_hash, toUInt32(time) FROM blocks FINAL
		WHERE chain_id = ? AND number BETWEEN ? AND ? AND has(?, hash) AND deleted = 0`
	brows, err := s.conn.Query(ctx, qb, s.chainID, lo, hi, hashes)
	if err != nil {
		return fmt.Errorf("reading orphaned blocks: %w", err)
	}
	var bs []Block
	for brows.Next() {
		var b Block
		if err := brows.Scan(&b.Number, &b.Hash, &b.ParentHash, &b.Time); err != nil {
			brows.Close()
			return fmt.Errorf("reading orphaned blocks: %w", err)
		}
		bs = append(bs, b)
	}
	brows.Close()
	if err := brows.Err(); err != nil {
		return fmt.Errorf("reading orphaned blocks: %w", err)
	}
	return s.writeBlocks(ctx, bs, nil, 1, version)
}

// Reorg describes one handled reorg.
type Reorg struct {
	ForkNumber uint64 // first block that changed
	Depth      uint32 // number of orphaned blocks
	OldHash    string // our block at ForkNumber before the reorg
	NewHash    string // the node's block at ForkNumber after it
}

func (s *chSink) recordReorg(ctx context.Context, r Reorg) error {
	batch, err := s.conn.PrepareBatch(ctx, `INSERT INTO reorgs (chain_id, detected_at, fork_number, depth, old_hash, new_hash)`)
	if err != nil {
		return fmt.Errorf("preparing reorg record: %w", err)
	}
	defer batch.Abort()
	if err := batch.Append(s.chainID, time.Now(), r.ForkNumber, r.Depth, r.OldHash, r.NewHash); err != nil {
		return fmt.Errorf("appending reorg record: %w", err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("recording reorg: %w", err)
	}
	return nil
}
