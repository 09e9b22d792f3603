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
// of a large backfill. It is used from one goroutine (the runner's).
type chSink struct {
	conn    driver.Conn
	chainID uint64
	metrics *metrics
	// cols is reused from chunk to chunk and batch to batch.
	cols transferColumns
}

const insertTransfers = `INSERT INTO transfers (chain_id, block_number, block_hash, block_time, tx_hash, log_index,
	token, from_address, to_address, amount_raw, amount_overflow, deleted, version)`

// transferChunk is how many transfer rows are encoded at a time. A batch
// goes to ClickHouse as one INSERT of blocks of this many rows (the server
// squashes them into one part), so what the client holds to send a batch is
// one chunk's columns, not the whole batch's.
const transferChunk = 8 << 10

// transferColumns are the transfers insert's columns, in its order.
type transferColumns struct {
	chain, number []uint64
	hash          []string
	btime         []int64
	tx            []string
	logIndex      []uint32
	token, from   []string
	to, raw       []string
	overflow, del []uint8
	ver           []uint64
}

func (c *transferColumns) reset() {
	if cap(c.chain) < transferChunk {
		*c = transferColumns{
			chain: make([]uint64, 0, transferChunk), number: make([]uint64, 0, transferChunk), hash: make([]string, 0, transferChunk),
			btime: make([]int64, 0, transferChunk), tx: make([]string, 0, transferChunk), logIndex: make([]uint32, 0, transferChunk),
			token: make([]string, 0, transferChunk), from: make([]string, 0, transferChunk), to: make([]string, 0, transferChunk),
			raw: make([]string, 0, transferChunk), overflow: make([]uint8, 0, transferChunk), del: make([]uint8, 0, transferChunk),
			ver: make([]uint64, 0, transferChunk),
		}
		return
	}
	c.chain, c.number, c.hash, c.btime = c.chain[:0], c.number[:0], c.hash[:0], c.btime[:0]
	c.tx, c.logIndex, c.token, c.from = c.tx[:0], c.logIndex[:0], c.token[:0], c.from[:0]
	c.to, c.raw, c.overflow, c.del, c.ver = c.to[:0], c.raw[:0], c.overflow[:0], c.del[:0], c.ver[:0]
}

func (c *transferColumns) add(chainID uint64, t *Transfer, deleted uint8, version uint64) {
	var overflow uint8
	if len(t.Amount) > maxDecimal38Digits {
		overflow = 1
	}
	c.chain, c.number, c.hash = append(c.chain, chainID), append(c.number, t.BlockNumber), append(c.hash, t.BlockHash)
	c.btime, c.tx, c.logIndex = append(c.btime, int64(t.BlockTime)), append(c.tx, t.TxHash), append(c.logIndex, t.LogIndex)
	c.token, c.from, c.to = append(c.token, t.Token), append(c.from, t.From), append(c.to, t.To)
	c.raw, c.overflow = append(c.raw, t.Amount), append(c.overflow, overflow)
	c.del, c.ver = append(c.del, deleted), append(c.ver, version)
}

// appendTo appends the columns to a batch.
func (c *transferColumns) appendTo(b driver.Batch) error {
	for i, col := range []any{c.chain, c.number, c.hash, c.btime, c.tx, c.logIndex, c.token, c.from, c.to, c.raw, c.overflow, c.del, c.ver} {
		if err := b.Column(i).Append(col); err != nil {
			return fmt.Errorf("appending transfers column %d: %w", i, err)
		}
	}
	return nil
}

// writeTransfers inserts the transfers in one INSERT, a chunk at a time.
func (s *chSink) writeTransfers(ctx context.Context, parts [][]Transfer, deleted uint8, version uint64) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n == 0 {
		return nil
	}
	start := time.Now()
	batch, err := s.conn.PrepareBatch(ctx, insertTransfers)
	if err != nil {
		return fmt.Errorf("preparing transfers insert: %w", err)
	}
	defer batch.Abort()
	c := &s.cols
	c.reset()
	// Strings in the reused columns would keep the last batch's transfers
	// alive; clear them once sent.
	defer func() { clear(c.hash[:cap(c.hash)]); clear(c.tx[:cap(c.tx)]); clear(c.token[:cap(c.token)]) }()
	defer func() { clear(c.from[:cap(c.from)]); clear(c.to[:cap(c.to)]); clear(c.raw[:cap(c.raw)]) }()
	for _, ts := range parts {
		for j := range ts {
			c.add(s.chainID, &ts[j], deleted, version)
			if len(c.chain) < transferChunk {
				continue
			}
			if err := c.appendTo(batch); err != nil {
				return err
			}
			if err := batch.Flush(); err != nil {
				return fmt.Errorf("inserting %d rows into transfers: %w", n, err)
			}
			c.reset()
		}
	}
	if len(c.chain) > 0 {
		if err := c.appendTo(batch); err != nil {
			return err
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("inserting %d rows into transfers: %w", n, err)
	}
	s.metrics.insertRows.WithLabelValues("transfers").Add(float64(n))
	s.metrics.insertSeconds.WithLabelValues("transfers").Observe(time.Since(start).Seconds())
	return nil
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

// liveFrom returns the live blocks at or above number (their hashes and
// heights, which is what tombstone needs).
func (s *chSink) liveFrom(ctx context.Context, number uint64) ([]Block, error) {
	rows, err := s.conn.Query(ctx, `SELECT number, hash FROM blocks FINAL WHERE chain_id = ? AND number >= ? AND deleted = 0 ORDER BY number`, s.chainID, number)
	if err != nil {
		return nil, fmt.Errorf("reading blocks above the cursor: %w", err)
	}
	defer rows.Close()
	var out []Block
	for rows.Next() {
		var b Block
		if err := rows.Scan(&b.Number, &b.Hash); err != nil {
			return nil, fmt.Errorf("reading blocks above the cursor: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
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
