package reconciler

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/settle-dev/settle/internal/chain"
)

// ChainOptions are the reconciler's per-chain settings.
type ChainOptions struct {
	// FinalityDepth: a block is final once the indexed head is this many
	// blocks above it. Default 12. Ignored when Finalized is set.
	FinalityDepth uint64
	// Finalized, when set, returns the chain's finalized block number (the
	// node's "finalized" tag); blocks up to it, and up to the indexed head,
	// are final.
	Finalized func(ctx context.Context) (uint64, error)
	// StartBlock: where a chain with no reconciler cursor starts.
	StartBlock uint64
	// MaxReorgDepth: how far back to re-read after the block at the cursor
	// was replaced. Default 64.
	MaxReorgDepth uint64
}

// Config configures a Reconciler.
type Config struct {
	Chains     *chain.Registry
	Options    map[uint64]ChainOptions
	Postgres   *pgxpool.Pool
	ClickHouse driver.Conn
	// Treasury is the address that pays deliveries and refunds; its
	// outgoing transfers are how payouts are seen on chain.
	Treasury   string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Interval between passes when there is nothing new; default 250ms.
	Interval time.Duration
	// BatchBlocks bounds the blocks read per pass and chain; default 500.
	BatchBlocks uint64
	Now         func() time.Time
}

// Reconciler attributes indexed transfers to sessions and advances them.
type Reconciler struct {
	cfg     Config
	logger  *slog.Logger
	metrics *metrics
	// afterRead, if set, runs between StepChain's read of a range and its
	// re-check of the range's last block (tests: an indexer rewind there).
	afterRead func()
}

// New checks cfg and returns a Reconciler.
func New(cfg Config) (*Reconciler, error) {
	if cfg.Chains == nil || cfg.Postgres == nil || cfg.ClickHouse == nil {
		return nil, errors.New("reconciler: Chains, Postgres and ClickHouse are required")
	}
	cfg.Treasury = strings.ToLower(cfg.Treasury)
	cfg.Interval = cmp.Or(cfg.Interval, 250*time.Millisecond)
	cfg.BatchBlocks = cmp.Or(cfg.BatchBlocks, 500)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{cfg: cfg, logger: logger.With("component", "reconciler"), metrics: newMetrics(cfg.Registerer)}, nil
}

func (r *Reconciler) options(chainID uint64) ChainOptions {
	o := r.cfg.Options[chainID]
	o.FinalityDepth = cmp.Or(o.FinalityDepth, 12)
	o.MaxReorgDepth = cmp.Or(o.MaxReorgDepth, 64)
	return o
}

// Run reconciles every EVM chain, settles sessions and copies the ledger
// until ctx is done.
func (r *Reconciler) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, c := range r.cfg.Chains.ByFamily(chain.FamilyEVM) {
		g.Go(func() error {
			return r.loop(ctx, "chain "+c.Name, func(ctx context.Context) (bool, error) { return r.StepChain(ctx, c) })
		})
	}
	g.Go(func() error { return r.loop(ctx, "settle", r.Settle) })
	g.Go(func() error { return r.loop(ctx, "ledger", r.CopyLedger) })
	return g.Wait()
}

// loop runs step until ctx is done: again at once while it reports more
// work, after Interval otherwise, with backoff after errors.
func (r *Reconciler) loop(ctx context.Context, name string, step func(context.Context) (bool, error)) error {
	failures := 0
	for {
		more, err := step(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := r.cfg.Interval
		if err != nil {
			failures++
			wait = min(time.Duration(failures)*time.Second, 30*time.Second)
			r.logger.WarnContext(ctx, "reconciler step failed; retrying", "step", name, "err", err, "retry_in", wait)
		} else {
			failures = 0
			if more {
				continue
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}
