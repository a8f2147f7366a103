package mirror

import "github.com/prometheus/client_golang/prometheus"

const metricPrefix = "switchyard_renderer_consul_mirror_"

// metrics are the mirror's families, registered by whoever serves
// /metrics through Collectors.
type metrics struct {
	upConns    prometheus.Gauge
	upRequests *prometheus.CounterVec
	served     *prometheus.CounterVec
	waiting    prometheus.Gauge
	entries    prometheus.Gauge
	upstreamUp prometheus.GaugeFunc
	sync       prometheus.Histogram
	// inline: service answers read in process (Inline).
	inlineReads  *prometheus.CounterVec
	inlineQueued prometheus.Gauge
}

func newMetrics(up func() float64) *metrics {
	return &metrics{
		upConns: prometheus.NewGauge(prometheus.GaugeOpts{Name: metricPrefix + "upstream_connections",
			Help: "Connections open from the mirror to the Consul agent (at most 4)."}),
		upRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + "upstream_requests_total",
			Help: "Requests the mirror sent to the Consul agent, by endpoint (dump and kv are its change watches)."}, []string{"endpoint"}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + "served_total",
			Help: "Requests consul-template made to the mirror, by endpoint and whether they were blocking queries."}, []string{"endpoint", "blocking"}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{Name: metricPrefix + "blocking_queries",
			Help: "Blocking queries the mirror holds now (one per watched dependency)."}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{Name: metricPrefix + "entries",
			Help: "Distinct answers the mirror keeps."}),
		upstreamUp: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: metricPrefix + "upstream_up",
			Help: "1 while every upstream watch of the mirror answers."}, up),
		sync: prometheus.NewHistogram(prometheus.HistogramOpts{Name: metricPrefix + "sync_seconds",
			Help:    "From a change seen by a watch to every answer it touched fetched again.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
		inlineReads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + "inline_reads_total",
			Help: "Service answers read in process for the templates' service calls (a call whose answer did not change reads nothing), by result (ok, error)."}, []string{"result"}),
		inlineQueued: prometheus.NewGauge(prometheus.GaugeOpts{Name: metricPrefix + "inline_queued",
			Help: "Service answers the templates asked for that are not read yet: the pass waits for them."}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.upConns, m.upRequests, m.served, m.waiting, m.entries, m.upstreamUp, m.sync, m.inlineReads, m.inlineQueued}
}
