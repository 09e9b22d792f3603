package delivery

import (
	"context"
	"maps"
	"math/big"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes counted by settle_payouts_total.
const (
	outcomeSigned      = "signed"
	outcomeBroadcast   = "broadcast"
	outcomeRebroadcast = "rebroadcast"
	outcomeBumped      = "bumped"
	outcomeMined       = "mined"
	outcomeReverted    = "reverted"
	outcomeAttention   = "needs_attention"
	outcomeReorged     = "reorged"
	outcomeFinal       = "final"
	outcomeError       = "error"
)

// balanceEvery is how often the treasury balance gauges are refreshed; a
// balanceOf per token per pass would multiply the RPC load for a number an
// operator reads once a minute.
const balanceEvery = 5 * time.Second

type metrics struct {
	payouts       *prometheus.CounterVec
	tokenBalance  *prometheus.GaugeVec
	nativeBalance *prometheus.GaugeVec
	attention     *prometheus.GaugeVec

	// mu guards attentionAt, when the attention gauge was last refreshed.
	mu          sync.Mutex
	attentionAt time.Time
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		payouts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "settle_payouts_total",
			Help: "Payout events by payout kind (delivery, refund) and outcome: signed, broadcast and rebroadcast count " +
				"transactions (transfers, runner fundings, executes); mined and reverted count payouts (a call that reverted or " +
				"took nothing is reverted); bumped counts fee replacements; needs_attention counts payouts parked for an operator; " +
				"final counts mined or reverted receipts whose block became final; reorged counts receipts whose block a reorg " +
				"removed; error counts failed attempts."},
			[]string{"kind", "outcome"}),
		tokenBalance: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "settle_treasury_balance",
			Help: "Treasury token balance in token units (not the smallest unit)."},
			[]string{"chain_id", "token", "symbol"}),
		nativeBalance: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "settle_treasury_native_balance_wei",
			Help: "Treasury balance of the chain's native coin in wei, which pays the gas."},
			[]string{"chain_id"}),
		attention: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "settle_payouts_needing_attention",
			Help: "Payouts in needs_attention on the chain: the executor cannot progress them alone, an operator must " +
				"`settle payouts retry` or `settle payouts abandon` them. Refreshed every few seconds from Postgres."},
			[]string{"chain_id"}),
	}
	if reg != nil {
		reg.MustRegister(m.payouts, m.tokenBalance, m.nativeBalance, m.attention)
	}
	return m
}

func (m *metrics) count(kind, outcome string) { m.payouts.WithLabelValues(kind, outcome).Inc() }

// updateBalances refreshes the treasury balance gauges at most every
// balanceEvery. A failed read leaves the old value and is logged at debug:
// the gauges are for dashboards, the payouts do not depend on them.
func (e *Executor) updateBalances(ctx context.Context) {
	e.mu.Lock()
	due := time.Since(e.balancesAt) >= balanceEvery
	if due {
		e.balancesAt = time.Now()
	}
	e.mu.Unlock()
	if !due {
		return
	}
	for id, d := range e.chains {
		e.updateChainBalances(ctx, id, d)
	}
}

func (e *Executor) updateChainBalances(ctx context.Context, id uint64, d Driver) {
	// A hung node must not stall the payouts of the pass.
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	chainID := strconv.FormatUint(id, 10)
	if wei, err := d.Balance(ctx, ""); err != nil {
		e.logger.DebugContext(ctx, "reading treasury balance failed", "chain_id", id, "err", err)
	} else {
		f, _ := new(big.Float).SetInt(wei).Float64()
		e.metrics.nativeBalance.WithLabelValues(chainID).Set(f)
	}
	for _, t := range e.tokens[id] {
		raw, err := d.Balance(ctx, t.Address)
		if err != nil {
			e.logger.DebugContext(ctx, "reading treasury token balance failed", "chain_id", id, "token", t.Symbol, "err", err)
			continue
		}
		e.metrics.tokenBalance.WithLabelValues(chainID, t.Address, t.Symbol).Set(units(raw, t.Decimals))
	}
}

// updateAttention refreshes settle_payouts_needing_attention for every
// configured chain at most every balanceEvery, from one count over
// payouts_attention_idx. A failed count leaves the old values.
func (e *Executor) updateAttention(ctx context.Context) {
	m := e.metrics
	m.mu.Lock()
	due := time.Since(m.attentionAt) >= balanceEvery
	if due {
		m.attentionAt = time.Now()
	}
	m.mu.Unlock()
	if !due {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ids := slices.Collect(maps.Keys(e.chains))
	chainIDs := make([]int64, len(ids))
	for i, id := range ids {
		chainIDs[i] = int64(id)
	}
	rows, err := e.pg.Query(ctx, `SELECT chain_id, count(*) FROM payouts
		WHERE status = 'needs_attention' AND chain_id = ANY($1) GROUP BY chain_id`, chainIDs)
	if err != nil {
		e.logger.DebugContext(ctx, "counting payouts that need attention failed", "err", err)
		return
	}
	counts := make(map[int64]int64, len(chainIDs))
	var id, n int64
	_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error {
		counts[id] = n
		return nil
	})
	if err != nil {
		e.logger.DebugContext(ctx, "counting payouts that need attention failed", "err", err)
		return
	}
	for _, id := range chainIDs {
		m.attention.WithLabelValues(strconv.FormatInt(id, 10)).Set(float64(counts[id]))
	}
}

// units converts a smallest-unit amount to token units, as a float for a
// gauge (exact amounts live in Postgres and ClickHouse, not here).
func units(raw *big.Int, decimals uint8) float64 {
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(decimals)), nil)
	f, _ := new(big.Float).Quo(new(big.Float).SetInt(raw), new(big.Float).SetInt(scale)).Float64()
	return f
}
