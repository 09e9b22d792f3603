// Package reconciler advances sessions from what happens on chain and in
// time. This file holds the expiry loop; deposit matching joins it in the
// reconciler proper.
package reconciler

import (
	"cmp"
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ExpiryStore persists expiries.
type ExpiryStore interface {
	ExpireDue(ctx context.Context, now time.Time, limit int) (int, error)
}

// ExpiryConfig configures an Expirer.
type ExpiryConfig struct {
	Store    ExpiryStore
	Logger   *slog.Logger
	Interval time.Duration // default 1s
	Batch    int           // default 500
	Now      func() time.Time
	// Registerer receives the expiry metric; nil means none.
	Registerer prometheus.Registerer
}

// Expirer persists the expiry of sessions whose deadline passed with no
// deposit. Readers already see such sessions as expired (session.StatusAt);
// this loop makes it durable and writes the outbox event.
type Expirer struct {
	cfg     ExpiryConfig
	logger  *slog.Logger
	expired prometheus.Counter
}

// NewExpirer returns an Expirer.
func NewExpirer(cfg ExpiryConfig) *Expirer {
	cfg.Interval = cmp.Or(cfg.Interval, time.Second)
	cfg.Batch = cmp.Or(cfg.Batch, 500)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := &Expirer{cfg: cfg, logger: logger.With("component", "expiry"),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "settle_sessions_expired_total",
			Help: "Sessions the expiry loop moved to expired.",
		})}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(e.expired)
	}
	return e
}

// Run expires due sessions every Interval until ctx is done.
func (e *Expirer) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := e.RunOnce(ctx); err != nil && ctx.Err() == nil {
			e.logger.WarnContext(ctx, "expiring sessions failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RunOnce expires every session due now, in batches, and returns how many.
func (e *Expirer) RunOnce(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := e.cfg.Store.ExpireDue(ctx, e.cfg.Now(), e.cfg.Batch)
		total += n
		e.expired.Add(float64(n))
		if err != nil {
			return total, err
		}
		if n < e.cfg.Batch {
			if total > 0 {
				e.logger.InfoContext(ctx, "sessions expired", "count", total)
			}
			return total, nil
		}
	}
}
