package reconciler

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	deposits        *prometheus.CounterVec
	exceptions      *prometheus.CounterVec
	advanced        *prometheus.CounterVec
	toProcessing    prometheus.Histogram
	toSucceeded     prometheus.Histogram
	lagBlocks       *prometheus.GaugeVec
	unapplied       prometheus.Counter
	revived         prometheus.Counter
	settleParked    *prometheus.CounterVec
	payoutsCreated  *prometheus.CounterVec
	payoutConfirmed *prometheus.CounterVec
}

var latencyBuckets = []float64{0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60, 120, 300, 900, 1800, 3600}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		deposits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "settle_reconciler_deposits_total",
			Help: "Transfers to our receivers, by chain and whether they were credited."}, []string{"chain", "credited"}),
		exceptions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "settle_reconciler_exceptions_total",
			Help: "Transfers to our receivers that were not credited, by reason."}, []string{"reason"}),
		advanced: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "settle_reconciler_sessions_advanced_total",
			Help: "Session status changes made by the reconciler, by new status."}, []string{"status"}),
		toProcessing: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "settle_reconciler_block_to_processing_seconds",
			Help: "From the deposit block's timestamp to the session reaching processing.", Buckets: latencyBuckets}),
		toSucceeded: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "settle_reconciler_block_to_succeeded_seconds",
			Help: "From the first deposit block's timestamp to the session reaching succeeded.", Buckets: latencyBuckets}),
		lagBlocks: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "settle_reconciler_lag_blocks",
			Help: "Indexed head minus the reconciler's cursor, per chain."}, []string{"chain"}),
		unapplied: prometheus.NewCounter(prometheus.CounterOpts{Name: "settle_reconciler_deposits_unapplied_total",
			Help: "Deposits a reorg removed before they were final."}),
		payoutsCreated: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "settle_reconciler_payouts_scheduled_total",
			Help: "Payouts scheduled, by kind (delivery, refund)."}, []string{"kind"}),
		payoutConfirmed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "settle_reconciler_payouts_confirmed_total",
			Help: "Payouts seen final on chain, by kind."}, []string{"kind"}),
	}
	m.revived = prometheus.NewCounter(prometheus.CounterOpts{Name: "settle_reconciler_deposits_revived_total",
		Help: "Deposits a reorg removed whose block came back (A→B→A), applied again."})
	m.settleParked = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "settle_reconciler_settle_parked_total",
		Help: "Decisions that left a processing session waiting, by why (underpaid, unattributed, manual_refund, unsupported, error); the session leaves Settle's queue until then."},
		[]string{"wait"})
	reg.MustRegister(m.deposits, m.exceptions, m.advanced, m.toProcessing, m.toSucceeded, m.lagBlocks, m.unapplied, m.revived, m.settleParked,
		m.payoutsCreated, m.payoutConfirmed)
	return m
}
