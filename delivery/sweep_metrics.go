package delivery

import "github.com/prometheus/client_golang/prometheus"

// sweepMetrics are the sweeping counters.
type sweepMetrics struct {
	sweeps   *prometheus.CounterVec
	sweepGas *prometheus.CounterVec
}

func newSweepMetrics(reg prometheus.Registerer) *sweepMetrics {
	m := &sweepMetrics{
		sweeps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "settle_sweeps_total",
			Help: "Sweeps of receivers into the treasury by outcome: scheduled, gas_signed (a treasury gas top-up), signed (the " +
				"receiver's transfer), mined, reorged, confirmed (final, on the ledger), needs_attention, error (a failed step, retried)."},
			[]string{"outcome"}),
		sweepGas: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "settle_sweep_gas_wei_total",
			Help: "Native coin the treasury sent to receivers to pay for confirmed sweeps, in wei."},
			[]string{"chain_id"}),
	}
	if reg != nil {
		reg.MustRegister(m.sweeps, m.sweepGas)
	}
	return m
}
