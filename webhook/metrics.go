package webhook

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	attempts *prometheus.CounterVec
	duration prometheus.Histogram
	// latency is event created → first 2xx: what a merchant waits.
	latency   prometheus.Histogram
	pending   prometheus.Gauge
	oldest    prometheus.Gauge
	unfanned  prometheus.Gauge
	fannedOut prometheus.Counter
	disabled  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "settle_webhook_deliveries_total",
			Help: "Webhook delivery attempts by outcome: succeeded (2xx), retrying (failed, will retry), failed (gave up after the retry window).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "settle_webhook_attempt_duration_seconds",
			Help:    "Time from sending a webhook POST to its answer (or error).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "settle_webhook_event_latency_seconds",
			Help:    "Time from an event's outbox row to its first successful delivery to an endpoint.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 60, 600, 3600, 86400},
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "settle_webhook_queue_depth",
			Help: "Pending webhook deliveries (due or waiting for a retry).",
		}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "settle_webhook_oldest_pending_seconds",
			Help: "Age of the oldest pending webhook delivery (0 when none).",
		}),
		unfanned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "settle_webhook_outbox_pending",
			Help: "Outbox events not yet fanned out to webhook deliveries.",
		}),
		fannedOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "settle_webhook_events_fanned_out_total",
			Help: "Outbox events fanned out to webhook deliveries.",
		}),
		disabled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "settle_webhook_endpoints_disabled_total",
			Help: "Webhook endpoints disabled because every delivery failed through the retry window.",
		}),
	}
	reg.MustRegister(m.attempts, m.duration, m.latency, m.pending, m.oldest, m.unfanned, m.fannedOut, m.disabled)
	return m
}
