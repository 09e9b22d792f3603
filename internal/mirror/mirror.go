// Package mirror copies receiver addresses from Postgres, where they are
// allocated, to ClickHouse's receivers table, where finance joins them with
// transfers.
//
// Postgres stays the source of truth: a receiver is committed there first and
// marked mirrored only after ClickHouse accepted it, so a ClickHouse outage
// delays the copy but never loses a row, and a repeated copy is harmless
// (ReplacingMergeTree keyed on the address).
package mirror

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/settle-dev/settle/internal/store"
)

// Store is the Postgres side of the mirror.
type Store interface {
	UnmirroredReceivers(ctx context.Context, limit int) ([]store.Receiver, error)
	MarkMirrored(ctx context.Context, ids []int64) error
}

// Config configures a Mirror.
type Config struct {
	Store      Store
	ClickHouse driver.Conn
	Logger     *slog.Logger
	// Interval is how often the mirror looks for rows nobody kicked it
	// for (after a ClickHouse error, or rows from another API replica);
	// default 5s.
	Interval time.Duration
	// BatchSize bounds one ClickHouse insert; default 1000.
	BatchSize int
}

// Mirror is the copy loop.
type Mirror struct {
	cfg    Config
	logger *slog.Logger
	kick   chan struct{}
}

// New returns a Mirror.
func New(cfg Config) *Mirror {
	cfg.Interval = cmp.Or(cfg.Interval, 5*time.Second)
	cfg.BatchSize = cmp.Or(cfg.BatchSize, 1000)
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Mirror{cfg: cfg, logger: logger.With("component", "receiver_mirror"), kick: make(chan struct{}, 1)}
}

// Kick asks the loop to copy new rows now. It never blocks; kicks that
// arrive while a copy is pending coalesce into one.
func (m *Mirror) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run copies rows until ctx is done.
func (m *Mirror) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := m.Flush(ctx); err != nil && ctx.Err() == nil {
			m.logger.WarnContext(ctx, "mirroring receivers to clickhouse failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-m.kick:
		}
	}
}

// Flush copies every unmirrored row and returns how many it copied.
func (m *Mirror) Flush(ctx context.Context) (int, error) {
	total := 0
	for {
		rows, err := m.cfg.Store.UnmirroredReceivers(ctx, m.cfg.BatchSize)
		if err != nil || len(rows) == 0 {
			return total, err
		}
		if err := m.insert(ctx, rows); err != nil {
			return total, err
		}
		ids := make([]int64, len(rows))
		for i, r := range rows {
			ids[i] = r.ID
		}
		if err := m.cfg.Store.MarkMirrored(ctx, ids); err != nil {
			return total, err
		}
		total += len(rows)
		if len(rows) < m.cfg.BatchSize {
			return total, nil
		}
	}
}

func (m *Mirror) insert(ctx context.Context, rows []store.Receiver) error {
	batch, err := m.cfg.ClickHouse.PrepareBatch(ctx,
		"INSERT INTO receivers (family, address, derivation_index, session_id, merchant_id, created_at, version)")
	if err != nil {
		return fmt.Errorf("preparing receivers insert: %w", err)
	}
	defer batch.Abort()
	for _, r := range rows {
		// A row's content never changes, so its id is a fine version.
		if err := batch.Append(r.Family, r.Address, uint64(r.Index), r.SessionID, r.MerchantID, r.CreatedAt, uint64(r.ID)); err != nil {
			return fmt.Errorf("appending receiver %d: %w", r.ID, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("inserting %d receivers: %w", len(rows), err)
	}
	return nil
}
