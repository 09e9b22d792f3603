package indexer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures one chain's Runner.
type Config struct {
	ChainID    uint64
	ChainName  string
	Source     Source
	Postgres   *pgxpool.Pool
	ClickHouse driver.Conn
	// StartBlock is where a chain with no cursor starts.
	StartBlock uint64
	// MaxReorgDepth bounds how far back a reorg may reach; a deeper one
	// stops the indexer (ErrReorgTooDeep). Default 64.
	MaxReorgDepth uint64
	// RangeBlocks is the number of blocks per fetch; default 20.
	RangeBlocks uint64
	// Workers is the number of fetches in flight; default 3.
	Workers int
	// BatchRows flushes to ClickHouse once this many transfers are
	// pending; default 50,000. A batch is also flushed when it reaches the
	// head or after FlushInterval (default 1s).
	BatchRows     int
	FlushInterval time.Duration
	// PollInterval is how often the head is polled once caught up;
	// default 1s.
	PollInterval time.Duration
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
	// ProgressInterval is how often a backfill logs its progress;
	// default 10s.
	ProgressInterval time.Duration
}

// Runner indexes one chain.
type Runner struct {
	// chainHead is the newest head the planner saw; the writer reads it
	// for lag and progress.
	chainHead atomic.Uint64
	cfg       Config
	logger    *slog.Logger
	metrics   *metrics
	store     *pgStore
	sink      *chSink
	// lock holds the chain's advisory lock (see session).
	lock *pgxpool.Conn
}

// New checks cfg and returns a Runner.
func New(cfg Config) (*Runner, error) {
	if cfg.Source == nil || cfg.Postgres == nil || cfg.ClickHouse == nil || cfg.ChainID == 0 || cfg.ChainName == "" {
		return nil, errors.New("indexer: ChainID, ChainName, Source, Postgres and ClickHouse are required")
	}
	cfg.MaxReorgDepth = cmp.Or(cfg.MaxReorgDepth, 64)
	cfg.RangeBlocks = cmp.Or(cfg.RangeBlocks, 20)
	cfg.Workers = cmp.Or(cfg.Workers, 3)
	cfg.BatchRows = cmp.Or(cfg.BatchRows, 50_000)
	cfg.FlushInterval = cmp.Or(cfg.FlushInterval, time.Second)
	cfg.PollInterval = cmp.Or(cfg.PollInterval, time.Second)
	cfg.ProgressInterval = cmp.Or(cfg.ProgressInterval, 10*time.Second)
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := newMetrics(cfg.Registerer, cfg.ChainName)
	return &Runner{
		cfg:     cfg,
		logger:  logger.With("component", "indexer", "chain", cfg.ChainName),
		metrics: m,
		store:   &pgStore{pool: cfg.Postgres, chainID: cfg.ChainID},
		sink:    &chSink{conn: cfg.ClickHouse, chainID: cfg.ChainID, metrics: m},
	}, nil
}

// errReorg says a block's parent did not match: the caller walks back.
var errReorg = errors.New("parent hash mismatch")

// Run indexes until ctx is done (nil) or a reorg deeper than MaxReorgDepth
// stops the chain (ErrReorgTooDeep). Every other error is logged and
// retried with jittered backoff.
func (r *Runner) Run(ctx context.Context) error {
	defer r.unlock()
	var failures int
	for {
		err := r.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errReorg) {
			err = r.handleReorg(ctx)
			if err == nil {
				failures = 0
				continue
			}
		}
		if errors.Is(err, ErrReorgTooDeep) {
			r.logger.ErrorContext(ctx, "indexer stopped: reorg deeper than the configured maximum; history is not rewritten automatically",
				"max_reorg_depth", r.cfg.MaxReorgDepth, "err", err)
			return err
		}
		failures++
		wait := backoff(failures)
		r.logger.WarnContext(ctx, "indexing interrupted; retrying", "err", err, "retry_in", wait)
		if !sleep(ctx, wait) {
			return nil
		}
	}
}

// backoff returns a jittered exponential delay: 100ms doubling to 30s.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt-1, 9)
	d = min(d, 30*time.Second)
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

type job struct {
	from, to uint64
	atHead   bool
	done     chan *Range
}

// session runs the fetch pipeline from the stored cursor until an error.
// Fetches run ahead on Workers goroutines while this goroutine verifies,
// writes and advances in order, so fetching, decoding and inserting overlap.
func (r *Runner) session(ctx context.Context) error {
	if err := r.holdLock(ctx); err != nil {
		return err
	}
	if err := r.finishOrphans(ctx); err != nil {
		return err
	}
	cur, ok, err := r.store.cursor(ctx)
	if err != nil {
		return err
	}
	next := r.cfg.StartBlock
	if ok {
		next = cur.Number + 1
	}
	if err := r.dropUncommitted(ctx, next); err != nil {
		return err
	}
	r.metrics.indexedHead.Set(float64(next) - 1)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ordered := make(chan *job, 2*r.cfg.Workers)
	work := make(chan *job)
	planErr := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait
	for range r.cfg.Workers {
		wg.Go(func() {
			for j := range work {
				if rg := r.fetch(ctx, j); rg != nil {
					j.done <- rg
				}
			}
		})
	}
	wg.Go(func() {
		defer close(work)
		defer close(ordered)
		if err := r.plan(ctx, next, cur, ordered, work); err != nil {
			planErr <- err
		}
	})

	w := writer{r: r, prevHash: cur.Hash, next: next}
	progress := time.NewTicker(r.cfg.ProgressInterval)
	defer progress.Stop()
	for {
		var j *job
		select {
		case j = <-ordered:
		case err := <-planErr:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
		if j == nil {
			select {
			case err := <-planErr:
				return err
			default:
				return ctx.Err()
			}
		}
		var rg *Range
		select {
		case rg = <-j.done:
		case <-ctx.Done():
			return ctx.Err()
		case <-progress.C:
			w.logProgress(ctx)
			select {
			case rg = <-j.done:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := w.add(ctx, rg, j.atHead); err != nil {
			return err
		}
	}
}

// plan hands out consecutive ranges up to the head, in order. Once caught
// up it polls the head, and checks that the newest indexed block is still
// the node's: a reorg that keeps the height would otherwise go unseen until
// the next block.
func (r *Runner) plan(ctx context.Context, next uint64, cur Cursor, ordered, work chan<- *job) error {
	var failures int
	for {
		head, err := r.cfg.Source.Head(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			r.logger.WarnContext(ctx, "reading chain head failed; retrying", "err", err)
			if !sleep(ctx, backoff(failures)) {
				return nil
			}
			continue
		}
		failures = 0
		r.chainHead.Store(head)
		r.metrics.chainHead.Set(float64(head))
		if head < next {
			if err := r.checkTip(ctx, next); err != nil {
				return err
			}
			if !sleep(ctx, r.cfg.PollInterval) {
				return nil
			}
			continue
		}
		for next <= head {
			to := min(next+r.cfg.RangeBlocks-1, head)
			j := &job{from: next, to: to, atHead: to == head, done: make(chan *Range, 1)}
			select {
			case ordered <- j:
			case <-ctx.Done():
				return nil
			}
			select {
			case work <- j:
			case <-ctx.Done():
				return nil
			}
			next = to + 1
		}
	}
}

// checkTip compares the stored newest block with the node's block at that
// height.
func (r *Runner) checkTip(ctx context.Context, next uint64) error {
	cur, ok, err := r.store.cursor(ctx)
	if err != nil || !ok || cur.Hash == "" || cur.Number+1 != next {
		return err
	}
	b, err := r.cfg.Source.Block(ctx, cur.Number)
	if err != nil {
		return nil // a failed check is retried at the next poll
	}
	if b.Hash != cur.Hash {
		return fmt.Errorf("block %d is now %s, we indexed %s: %w", cur.Number, b.Hash, cur.Hash, errReorg)
	}
	return nil
}

// fetch gets one range, retrying with backoff until it succeeds: a range is
// never skipped. It returns nil only when ctx is done.
func (r *Runner) fetch(ctx context.Context, j *job) *Range {
	for attempt := 1; ; attempt++ {
		rg, err := r.cfg.Source.Fetch(ctx, j.from, j.to)
		if err == nil {
			return rg
		}
		if ctx.Err() != nil {
			return nil
		}
		r.metrics.fetchErrors.Inc()
		level := slog.LevelWarn
		if errors.Is(err, ErrNotReady) {
			level = slog.LevelDebug
		}
		r.logger.Log(ctx, level, "fetching blocks failed; retrying", "from", j.from, "to", j.to, "attempt", attempt, "err", err)
		if !sleep(ctx, backoff(attempt)) {
			return nil
		}
	}
}

// batch is what one flush writes: blocks in order and the transfers of each
// fetched range.
type batch struct {
	blocks    []Block
	transfers [][]Transfer
	rows      int
}

func (b *batch) add(rg *Range) {
	b.blocks = append(b.blocks, rg.Blocks...)
	if len(rg.Transfers) > 0 {
		b.transfers = append(b.transfers, rg.Transfers)
		b.rows += len(rg.Transfers)
	}
}

// writer checks, batches and writes ranges in order.
type writer struct {
	r        *Runner
	prevHash string
	next     uint64
	// The pending batch keeps each range's transfers as fetched: copying
	// them into one slice would move every row once more for nothing.
	pending batch
	since   time.Time
	// progress accounting
	lastLog        time.Time
	loggedNumber   uint64
	loggedTransfer uint64
	doneTransfers  uint64
}

func (w *writer) add(ctx context.Context, rg *Range, atHead bool) error {
	for _, b := range rg.Blocks {
		if b.Number != w.next {
			return fmt.Errorf("source returned block %d, expected %d", b.Number, w.next)
		}
		if w.prevHash != "" && b.ParentHash != w.prevHash {
			return fmt.Errorf("block %d has parent %s, expected %s: %w", b.Number, b.ParentHash, w.prevHash, errReorg)
		}
		w.prevHash = b.Hash
		w.next++
	}
	if len(w.pending.blocks) == 0 {
		w.since = time.Now()
	}
	w.pending.add(rg)
	if atHead || w.pending.rows >= w.r.cfg.BatchRows || time.Since(w.since) >= w.r.cfg.FlushInterval {
		return w.flush(ctx)
	}
	return nil
}

// flush writes the pending batch to ClickHouse and only then moves the
// cursor.
func (w *writer) flush(ctx context.Context) error {
	if len(w.pending.blocks) == 0 {
		return nil
	}
	r := w.r
	version, err := r.store.nextVersion(ctx)
	if err != nil {
		return err
	}
	if err := r.sink.write(ctx, &w.pending, version); err != nil {
		return err
	}
	if err := r.store.advance(ctx, w.pending.blocks, r.cfg.MaxReorgDepth+1); err != nil {
		return err
	}
	last := w.pending.blocks[len(w.pending.blocks)-1]
	r.metrics.blocks.Add(float64(len(w.pending.blocks)))
	r.metrics.transfers.Add(float64(w.pending.rows))
	r.metrics.indexedHead.Set(float64(last.Number))
	r.metrics.lagSeconds.Set(time.Since(time.Unix(int64(last.Time), 0)).Seconds())
	w.doneTransfers += uint64(w.pending.rows)
	r.metrics.lagBlocks.Set(float64(r.chainHead.Load() - min(r.chainHead.Load(), last.Number)))
	w.pending = batch{blocks: w.pending.blocks[:0]}
	return nil
}

func (w *writer) logProgress(ctx context.Context) {
	now := time.Now()
	indexed := w.next - 1
	head := w.r.chainHead.Load()
	// Following the head is not a backfill: stay quiet within a range.
	if !w.lastLog.IsZero() && head > indexed+w.r.cfg.RangeBlocks {
		secs := now.Sub(w.lastLog).Seconds()
		blockRate := float64(indexed-w.loggedNumber) / secs
		eta := time.Duration(0)
		if blockRate > 0 {
			eta = time.Duration(float64(head-indexed) / blockRate * float64(time.Second)).Round(time.Second)
		}
		w.r.logger.InfoContext(ctx, "backfill progress", "indexed", indexed, "head", head,
			"blocks_per_s", int(blockRate), "transfers_per_s", int(float64(w.doneTransfers-w.loggedTransfer)/secs), "eta", eta)
	}
	w.lastLog, w.loggedNumber, w.loggedTransfer = now, indexed, w.doneTransfers
}

// handleReorg walks back from the cursor to the newest block the node still
// has, records the reorg, moves the cursor there and tombstones the orphaned
// blocks' rows.
func (r *Runner) handleReorg(ctx context.Context) error {
	cur, ok, err := r.store.cursor(ctx)
	if err != nil || !ok || cur.Hash == "" {
		return err
	}
	var orphans []Block
	n := cur.Number
	var fork Block
	for {
		stored, ok, err := r.store.storedBlock(ctx, n)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("no stored block at %d to compare (fork below the kept window of %d blocks): %w", n, r.cfg.MaxReorgDepth+1, ErrReorgTooDeep)
		}
		node, err := r.cfg.Source.Block(ctx, n)
		switch {
		case errors.Is(err, ErrNotReady):
			// The node's chain is now shorter: our block is orphaned.
		case err != nil:
			return fmt.Errorf("reading block %d during reorg walk-back: %w", n, err)
		case node.Hash == stored.Hash:
			fork = stored
		}
		if fork.Hash != "" {
			break
		}
		orphans = append(orphans, stored)
		if uint64(len(orphans)) > r.cfg.MaxReorgDepth {
			return fmt.Errorf("more than %d blocks changed below %d: %w", r.cfg.MaxReorgDepth, cur.Number, ErrReorgTooDeep)
		}
		if n == 0 {
			return fmt.Errorf("the whole chain changed: %w", ErrReorgTooDeep)
		}
		n--
	}
	if len(orphans) == 0 {
		return nil // the fork was above the cursor, in blocks never written
	}
	oldest := orphans[len(orphans)-1]
	rec := Reorg{ForkNumber: oldest.Number, Depth: uint32(len(orphans)), OldHash: oldest.Hash}
	if nb, err := r.cfg.Source.Block(ctx, oldest.Number); err == nil {
		rec.NewHash = nb.Hash
	}
	// Recorded before the rewind: a crash in between records it again,
	// which the reorgs table collapses (same key).
	if err := r.sink.recordReorg(ctx, rec); err != nil {
		return err
	}
	if err := r.store.rewind(ctx, fork, orphans); err != nil {
		return err
	}
	r.metrics.reorgs.Inc()
	r.metrics.reorgDepth.Observe(float64(rec.Depth))
	r.metrics.indexedHead.Set(float64(fork.Number))
	r.logger.WarnContext(ctx, "reorg handled", "fork_number", rec.ForkNumber, "depth", rec.Depth, "old_hash", rec.OldHash, "new_hash", rec.NewHash)
	return r.finishOrphans(ctx)
}

// errChainLocked: another indexer holds the chain.
var errChainLocked = errors.New("another indexer is indexing this chain (its advisory lock is held); waiting")

// holdLock takes (or checks it still holds) a session-level advisory lock
// on the chain, on a connection kept for the purpose. One indexer per chain
// is what makes dropUncommitted safe: rows above the cursor can only be a
// dead session's, never a live one's. A lost connection loses the lock; the
// next session takes it again before writing.
func (r *Runner) holdLock(ctx context.Context) error {
	if r.lock != nil {
		if _, err := r.lock.Exec(ctx, `SELECT 1`); err == nil {
			return nil
		}
		r.lock.Release()
		r.lock = nil
	}
	conn, err := r.store.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquiring a connection for the chain lock: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, indexerLockClass, int32(r.cfg.ChainID)).Scan(&ok); err != nil {
		conn.Release()
		return fmt.Errorf("taking the chain lock: %w", err)
	}
	if !ok {
		conn.Release()
		return errChainLocked
	}
	r.lock = conn
	return nil
}

// indexerLockClass is the first key of the indexers' advisory locks (the
// second is the chain id), so they cannot collide with other locks.
const indexerLockClass int32 = 0x5e771e

func (r *Runner) unlock() {
	if r.lock == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = r.lock.Exec(ctx, `SELECT pg_advisory_unlock($1, $2)`, indexerLockClass, int32(r.cfg.ChainID))
	r.lock.Release()
	r.lock = nil
}

// dropUncommitted tombstones live rows at or above next, the first block
// past the cursor. A session writes ClickHouse first and moves the cursor
// after, so such rows are a dead session's uncommitted writes (a crash
// between the two). They are written again from the node; but if the chain
// reorged meanwhile, no reorg handling would ever see them (tombstones
// cover blocks the cursor passed), and a dead fork's block and transfers
// would stay live beside the canonical ones.
func (r *Runner) dropUncommitted(ctx context.Context, next uint64) error {
	blocks, err := r.sink.liveFrom(ctx, next)
	if err != nil || len(blocks) == 0 {
		return err
	}
	version, err := r.store.nextVersion(ctx)
	if err != nil {
		return err
	}
	if err := r.sink.tombstone(ctx, blocks, version); err != nil {
		return err
	}
	r.logger.WarnContext(ctx, "dropped rows a previous session wrote above the cursor (it stopped before moving it); indexing them again",
		"from", next, "blocks", len(blocks))
	return nil
}

// finishOrphans tombstones the rows of blocks a reorg orphaned. It runs
// before any new data is written, so a re-indexed block always gets a higher
// version than its tombstone.
func (r *Runner) finishOrphans(ctx context.Context) error {
	orphans, err := r.store.orphans(ctx)
	if err != nil || len(orphans) == 0 {
		return err
	}
	version, err := r.store.nextVersion(ctx)
	if err != nil {
		return err
	}
	if err := r.sink.tombstone(ctx, orphans, version); err != nil {
		return err
	}
	return r.store.clearOrphans(ctx, orphans)
}
