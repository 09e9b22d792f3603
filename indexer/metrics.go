package indexer

import "github.com/prometheus/client_golang/prometheus"

// metrics are one chain's indexer metrics; every series carries the chain
// name as a constant label.
type metrics struct {
	chainHead     prometheus.Gauge
	indexedHead   prometheus.Gauge
	lagBlocks     prometheus.Gauge
	lagSeconds    prometheus.Gauge
	blocks        prometheus.Counter
	transfers     prometheus.Counter
	insertRows    *prometheus.CounterVec
	insertSeconds *prometheus.HistogramVec
	reorgs        prometheus.Counter
	reorgDepth    prometheus.Histogram
	fetchErrors   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, chain string) *metrics {
	labels := prometheus.Labels{"chain": chain}
	m := &metrics{
		chainHead: prometheus.NewGauge(prometheus.GaugeOpts{Name: "settle_indexer_chain_head", ConstLabels: labels,
			Help: "Newest block number the node reports."}),
		indexedHead: prometheus.NewGauge(prometheus.GaugeOpts{Name: "settle_indexer_indexed_head", ConstLabels: labels,
			Help: "Newest block number written to ClickHouse (the cursor)."}),
		lagBlocks: prometheus.NewGauge(prometheus.GaugeOpts{Name: "settle_indexer_lag_blocks", ConstLabels: labels,
			Help: "Chain head minus indexed head."}),
		lagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "settle_indexer_lag_seconds", ConstLabels: labels,
			Help: "Now minus the timestamp of the newest indexed block."}),
		blocks: prometheus.NewCounter(prometheus.CounterOpts{Name: "settle_indexer_blocks_total", ConstLabels: labels,
			Help: "Blocks indexed (re-indexed blocks count again)."}),
		transfers: prometheus.NewCounter(prometheus.CounterOpts{Name: "settle_indexer_transfers_total", ConstLabels: labels,
			Help: "Token transfers indexed."}),
		insertRows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "settle_indexer_clickhouse_rows_total", ConstLabels: labels,
			Help: "Rows inserted into ClickHouse, by table."}, []string{"table"}),
		insertSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "settle_indexer_clickhouse_insert_seconds", ConstLabels: labels,
			Help:    "ClickHouse insert latency, by table.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"table"}),
		reorgs: prometheus.NewCounter(prometheus.CounterOpts{Name: "settle_indexer_reorgs_total", ConstLabels: labels,
			Help: "Reorgs handled."}),
		reorgDepth: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "settle_indexer_reorg_depth_blocks", ConstLabels: labels,
			Help: "Depth of handled reorgs, in orphaned blocks.", Buckets: []float64{1, 2, 3, 5, 10, 20, 50, 100}}),
		fetchErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "settle_indexer_fetch_retries_total", ConstLabels: labels,
			Help: "Range fetches that failed and were retried."}),
	}
	reg.MustRegister(m.chainHead, m.indexedHead, m.lagBlocks, m.lagSeconds, m.blocks, m.transfers,
		m.insertRows, m.insertSeconds, m.reorgs, m.reorgDepth, m.fetchErrors)
	return m
}
