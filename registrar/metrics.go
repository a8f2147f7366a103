package main

import (
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchyard/switchyard/registrar/internal/reconcile"
)

// metricPrefix starts every family of ours, so dashboards can select them
// apart from the Go and process families served next to them.
const metricPrefix = "switchyard_registrar_"

// version is the registrar's version; release builds set it with
// -ldflags "-X main.version=...". Empty, the module version is used.
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}

// checkStatuses always have a sample in checks, so an alert on
// status="critical" sees 0 rather than nothing while all is well.
var checkStatuses = []string{"passing", "warning", "critical", reconcile.CheckUnknown}

// metrics holds the families the reconcile loop counts into (it
// implements reconcile.Recorder) and serves them with the ones read from
// its Status at scrape time.
type metrics struct {
	events        *prometheus.CounterVec
	reconnects    prometheus.Counter
	resyncs       *prometheus.CounterVec
	resyncSeconds prometheus.Histogram
	registered    *prometheus.CounterVec
	deregistered  *prometheus.CounterVec
	consulErrors  prometheus.Counter
}

// resyncBuckets run from 10ms to about 80s in doublings: a resync of a
// few containers takes milliseconds, one that waits on timeouts seconds.
var resyncBuckets = prometheus.ExponentialBuckets(0.01, 2, 14)

func newMetrics() *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + "events_total",
			Help: "Docker events received that name a container, by action (start, die, kill, connect, health_status, ...)."}, []string{"type"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: metricPrefix + "event_stream_reconnects_total",
			Help: "Reconnects of the Docker event stream (each is followed by a full resync)."}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + "resyncs_total",
			Help: "Full resyncs (Docker and Consul read and compared), by result (ok, failed)."}, []string{"result"}),
		resyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: metricPrefix + "resync_duration_seconds",
			Help: "Time a full resync took, failed ones included.", Buckets: resyncBuckets}),
		registered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + "registrations_total",
			Help: "Services registered or updated in Consul, by reason (event, retry, resync)."}, []string{"reason"}),
		deregistered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + "deregistrations_total",
			Help: "Services removed from Consul, by reason (removed, stopped, unwanted, shutdown)."}, []string{"reason"}),
		consulErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: metricPrefix + "consul_errors_total",
			Help: "Failed Consul calls (start-up attempts, list, register, deregister, check update, maintenance); refused takeovers not included."}),
	}
	// Every known label value has a sample from the start.
	for _, r := range []string{"ok", "failed"} {
		m.resyncs.WithLabelValues(r)
	}
	for _, r := range reconcile.RegisterReasons {
		m.registered.WithLabelValues(r)
	}
	for _, r := range reconcile.DeregisterReasons {
		m.deregistered.WithLabelValues(r)
	}
	return m
}

// The reconcile.Recorder methods.

func (m *metrics) Event(typ string)           { m.events.WithLabelValues(typ).Inc() }
func (m *metrics) Reconnect()                 { m.reconnects.Inc() }
func (m *metrics) Registered(reason string)   { m.registered.WithLabelValues(reason).Inc() }
func (m *metrics) Deregistered(reason string) { m.deregistered.WithLabelValues(reason).Inc() }
func (m *metrics) ConsulError()               { m.consulErrors.Inc() }
func (m *metrics) Resync(d time.Duration, ok bool) {
	result := "failed"
	if ok {
		result = "ok"
	}
	m.resyncs.WithLabelValues(result).Inc()
	m.resyncSeconds.Observe(max(d, 0).Seconds())
}

// statusMetric is one family read from a Status at scrape time.
type statusMetric struct {
	name, help string
	typ        prometheus.ValueType
	value      func(reconcile.Status) float64
}

var statusMetrics = []statusMetric{
	{"ready", "1 when /ready answers 200.", prometheus.GaugeValue,
		func(s reconcile.Status) float64 { return b2f(s.Ready) }},
	{"containers", "Containers the registrar tracks.", prometheus.GaugeValue,
		func(s reconcile.Status) float64 { return float64(s.Containers) }},
	{"services", "Services this registrar owns in Consul.", prometheus.GaugeValue,
		func(s reconcile.Status) float64 { return float64(s.Services) }},
	{"retries_pending", "Containers whose inspect or Consul write awaits a retry.", prometheus.GaugeValue,
		func(s reconcile.Status) float64 { return float64(s.RetriesPending) }},
	{"takeovers_refused_total", "Service IDs a container asked for that someone else held (each container and ID once).", prometheus.CounterValue,
		func(s reconcile.Status) float64 { return float64(s.TakeoversRefused) }},
	{"draining", "Containers whose services are in maintenance because they were told to stop.", prometheus.GaugeValue,
		func(s reconcile.Status) float64 { return float64(s.Draining) }},
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// statusCollector reads one Status per scrape, so the gauges show the
// same moment and the loop keeps no second copy of its state.
type statusCollector struct {
	status func() reconcile.Status
	descs  []*prometheus.Desc // descs[i] describes statusMetrics[i]
	checks *prometheus.Desc
	build  *prometheus.Desc
}

func newStatusCollector(status func() reconcile.Status) *statusCollector {
	c := &statusCollector{status: status}
	for _, m := range statusMetrics {
		c.descs = append(c.descs, prometheus.NewDesc(metricPrefix+m.name, m.help, nil, nil))
	}
	c.checks = prometheus.NewDesc(metricPrefix+"checks", "Health checks of the services this registrar owns, by the status it registered them with (the Docker health check's as it keeps it; others' initial status, unknown when they have none).", []string{"status"}, nil)
	c.build = prometheus.NewDesc(metricPrefix+"build_info", "1, labelled with the registrar's version and the Go version it was built with.", []string{"version", "goversion"}, nil)
	return c
}

// Describe implements prometheus.Collector.
func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
	ch <- c.checks
	ch <- c.build
}

// Collect implements prometheus.Collector.
func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.status()
	for i, m := range statusMetrics {
		ch <- prometheus.MustNewConstMetric(c.descs[i], m.typ, m.value(s))
	}
	for _, st := range checkStatuses {
		ch <- prometheus.MustNewConstMetric(c.checks, prometheus.GaugeValue, float64(s.Checks[st]), st)
	}
	for st, n := range s.Checks { // a status this list does not know still shows
		if !slices.Contains(checkStatuses, st) {
			ch <- prometheus.MustNewConstMetric(c.checks, prometheus.GaugeValue, float64(n), st)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.build, prometheus.GaugeValue, 1, buildVersion(), runtime.Version())
}

// handler serves m and the families read from status from a registry of
// its own: the global one would collect whatever any library registers
// there, and a second handler (tests) would collide with the first.
func (m *metrics) handler(status func() reconcile.Status) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newStatusCollector(status),
		m.events, m.reconnects, m.resyncs, m.resyncSeconds, m.registered, m.deregistered, m.consulErrors,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// ContinueOnError: one family that fails (no /proc for the process
	// collector) must not blank the others.
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg,
	})
}
