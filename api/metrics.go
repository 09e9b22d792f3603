package api

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	sessionsCreated *prometheus.CounterVec
	receivers       *prometheus.CounterVec
	txHints         *prometheus.CounterVec
	paymentsCreated *prometheus.CounterVec
	idempotent      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "settle_api_requests_total",
			Help: "HTTP requests by route template, method and status code.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "settle_api_request_duration_seconds",
			Help:    "HTTP request latency by route template, method and status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method", "status"}),
		sessionsCreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "settle_api_sessions_created_total",
			Help: "POST /v1/sessions outcomes: created, invalid, unauthenticated or error.",
		}, []string{"outcome"}),
		receivers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "settle_api_receivers_allocated_total",
			Help: "Receiver addresses allocated, by chain family.",
		}, []string{"family"}),
		txHints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "settle_api_tx_hints_total",
			Help: "PUT check txHash hints: looked_up, error (the lookup failed) or limited (over the session's lookup budget, not looked up).",
		}, []string{"outcome"}),
		paymentsCreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "settle_api_payments_created_total",
			Help: "POST /api/payment outcomes: created, existing (an externalId seen before), invalid, unauthenticated or error.",
		}, []string{"outcome"}),
		idempotent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "settle_api_idempotent_requests_total",
			Help: "POSTs with an Idempotency-Key: stored (first response kept) or replayed.",
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.requests, m.duration, m.sessionsCreated, m.receivers, m.txHints, m.paymentsCreated, m.idempotent)
	for _, o := range []string{"created", "existing", "invalid", "unauthenticated", "error"} {
		m.paymentsCreated.WithLabelValues(o)
	}
	for _, o := range []string{"stored", "replayed"} {
		m.idempotent.WithLabelValues(o)
	}
	// Known label values start at zero, so rate() works from the first scrape.
	for _, o := range []string{"created", "invalid", "unauthenticated", "error"} {
		m.sessionsCreated.WithLabelValues(o)
	}
	m.receivers.WithLabelValues("evm")
	for _, o := range []string{"looked_up", "error", "limited"} {
		m.txHints.WithLabelValues(o)
	}
	return m
}
