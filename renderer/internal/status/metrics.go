package status

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricPrefix starts every family of ours, so dashboards can select them
// apart from the Go and process families served next to them.
const metricPrefix = "switchyard_renderer_"

// Label names. They are part of the interface, like the family names:
// dashboards and alerts match on them.
var (
	templateLabels = []string{"template", "dest"}
	proxyLabels    = []string{"proxy"}
)

// snapshotMetric is one family read from a Snapshot at scrape time.
// Exactly one of tmpl, proxy and global is set.
type snapshotMetric struct {
	name, help string
	typ        prometheus.ValueType
	tmpl       func(Template) float64 // one sample per template, or
	proxy      func(Proxy) float64    // one sample per proxy, or
	global     func(Snapshot) float64 // one sample
	// supervisedOnly: a proxy family that means nothing for a proxy we do
	// not run ourselves, so it has no sample for one.
	supervisedOnly bool
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.Unix()) + float64(t.Nanosecond())/1e9
}

const (
	counterValue = prometheus.CounterValue
	gaugeValue   = prometheus.GaugeValue
)

// snapshotMetrics lists the families read from the Snapshot. The first
// fifteen predate client_golang: their names, types, labels and help are
// an interface and stay as they are. Add new families at the end.
var snapshotMetrics = []snapshotMetric{
	{name: "ready", typ: gaugeValue, help: "1 when /ready answers 200: every template had a render accepted, none failed to write, execute or parse, a supervised proxy is up and the last reload of every proxy took.",
		global: func(s Snapshot) float64 { ok, _ := s.Ready(); return b2f(ok) }},
	{name: "template_accepted", typ: gaugeValue, help: "1 once a render of the template has been accepted.",
		tmpl: func(t Template) float64 { return b2f(t.Accepted) }},
	{name: "template_error", typ: gaugeValue, help: "1 while the template's last render was rejected.",
		tmpl: func(t Template) float64 { return b2f(t.LastError != "") }},
	{name: "swaps_total", typ: counterValue, help: "Rendered configs swapped into the live file.",
		tmpl: func(t Template) float64 { return float64(t.Swaps) }},
	{name: "last_swap_timestamp_seconds", typ: gaugeValue, help: "Unix time of the last swap of the live file (0: never).",
		tmpl: func(t Template) float64 { return unix(t.LastSwap) }},
	{name: "renders_rejected_total", typ: counterValue, help: "Rendered configs rejected by validation (or rolled back); the live file was not changed.",
		tmpl: func(t Template) float64 { return float64(t.Rejected) }},
	{name: "stale_guard_held", typ: gaugeValue, help: "1 while the stale guard holds a render of the template.",
		tmpl: func(t Template) float64 { return b2f(t.Held()) }},
	{name: "stale_guard_holds_total", typ: counterValue, help: "Renders held by the stale guard.",
		tmpl: func(t Template) float64 { return float64(t.Holds) }},
	{name: "reloads_total", typ: counterValue, help: "Proxy reloads that took (verified).",
		proxy: func(p Proxy) float64 { return float64(p.Reloads) }},
	{name: "reload_failures_total", typ: counterValue, help: "Proxy reloads that did not take.",
		proxy: func(p Proxy) float64 { return float64(p.ReloadFailures) }},
	{name: "rollbacks_total", typ: counterValue, help: "Failed reloads after which the previous good config was restored.",
		proxy: func(p Proxy) float64 { return float64(p.Rollbacks) }},
	{name: "last_reload_timestamp_seconds", typ: gaugeValue, help: "Unix time of the last reload attempt (0: never).",
		proxy: func(p Proxy) float64 { return unix(p.LastReload) }},
	{name: "last_reload_success", typ: gaugeValue, help: "1 unless the last reload of the proxy did not take.",
		proxy: func(p Proxy) float64 { return b2f(p.LastError == "") }},
	{name: "runner_rebuilds_total", typ: counterValue, help: "consul-template runners rebuilt after they died.",
		global: func(s Snapshot) float64 { return float64(s.Runner.Rebuilds) }},
	{name: "runner_outage_rebuilds_total", typ: counterValue, help: "consul-template runners rebuilt after a Consul outage.",
		global: func(s Snapshot) float64 { return float64(s.Runner.OutageRebuilds) }},

	{name: "template_write_errors_total", typ: counterValue, help: "Failed reads, stages and swaps of the template's files (ENOSPC, EROFS, EACCES).",
		tmpl: func(t Template) float64 { return float64(t.WriteErrors) }},
	{name: "template_exec_errors_total", typ: counterValue, help: "Executions of the template that failed before producing a config.",
		tmpl: func(t Template) float64 { return float64(t.ExecErrors) }},
	{name: "reload_pending", typ: gaugeValue, help: "1 while files changed that the proxy has not loaded yet (a batch waiting for its debounce, or a proxy that did not answer).",
		proxy: func(p Proxy) float64 { return b2f(p.ReloadPending) }},
	{name: "proxy_up", typ: gaugeValue, help: "1 while the proxy process the renderer supervises runs. Supervised proxies only.",
		proxy: func(p Proxy) float64 { return b2f(p.Up) }, supervisedOnly: true},
	{name: "proxy_deaths_total", typ: counterValue, help: "Unplanned exits of the proxy process the renderer supervises. Supervised proxies only.",
		proxy: func(p Proxy) float64 { return float64(p.Deaths) }, supervisedOnly: true},
	{name: "proxy_restarts_total", typ: counterValue, help: "Restarts of the supervised proxy process after it died. Supervised proxies only.",
		proxy: func(p Proxy) float64 { return float64(p.Restarts) }, supervisedOnly: true},
	{name: "consul_errors_total", typ: counterValue, help: "Errors the consul-template runner got from Consul while it retried.",
		global: func(s Snapshot) float64 { return float64(s.Runner.ConsulErrors) }},
	{name: "consul_up", typ: gaugeValue, help: "0 while Consul does not answer the consul-template runner, else 1. Consul down alone leaves the renderer ready: the proxy serves the last validated config.",
		global: func(s Snapshot) float64 { return b2f(s.Runner.ConsulDownSince.IsZero()) }},
	{name: "runtime_applies_total", typ: counterValue, help: "Membership changes (servers of existing upstreams or backends) applied through the proxy's runtime interface, without a reload.",
		proxy: func(p Proxy) float64 { return float64(p.RuntimeApplies) }},
	{name: "runtime_apply_failures_total", typ: counterValue, help: "Runtime applies that failed or could not be verified; each is followed by a reload.",
		proxy: func(p Proxy) float64 { return float64(p.RuntimeFailures) }},
	{name: "runtime_fallbacks_total", typ: counterValue, help: "Reloads made because a runtime apply failed.",
		proxy: func(p Proxy) float64 { return float64(p.RuntimeFallbacks) }},
	{name: "consul_throttled", typ: gaugeValue, help: "1 while Consul answers but refuses the consul-template runner (429 for too many connections from this address, or resets while it does).",
		global: func(s Snapshot) float64 { return b2f(!s.Runner.ThrottledSince.IsZero()) }},
	{name: "consul_missing_dependencies", typ: gaugeValue, help: "Dependencies of the templates without data at the runner's last pass; throttled with any missing makes the renderer unready.",
		global: func(s Snapshot) float64 { return float64(s.Runner.MissingDeps) }},
}

// consul_throttled_total has a reason label, so it is a family of its own
// next to the table: one sample per reason in throttleReasons.
const (
	throttledName = "consul_throttled_total"
	throttledHelp = "Errors of the consul-template runner where Consul answered but refused it, by reason: 429 (too many connections from this address) or conn_reset (connections reset while it answers 429)."
)

// template_error_kind is a state set (the label kind says which state)
// rather than an extra label on template_error: that family's labels are an
// interface, and a kind label on it would split its series whenever the
// kind changes.
const (
	errorKindName = "template_error_kind"
	errorKindHelp = "Which step of the template failed last: one sample per kind (validation, write, execute, rollback), 1 for the kind of the current failure, all 0 after an accepted render. write and execute make the renderer unready."
)

// errorKinds are the kinds that always have a sample, so an alert on
// kind="write" sees 0 rather than nothing while all is well.
var errorKinds = []string{KindValidation, KindWrite, KindExecute, KindRollback}

// labelValue makes v valid UTF-8. File paths need not be, and
// client_golang panics on a label value that is not, from a goroutine of
// the scrape, which would take the renderer down.
func labelValue(v string) string { return strings.ToValidUTF8(v, "\uFFFD") }

// snapshotCollector reads one Snapshot per scrape and turns it into const
// metrics, so /metrics shows the same moment in every family and the
// renderer keeps no second copy of its state.
type snapshotCollector struct {
	src   Source
	descs []*prometheus.Desc // descs[i] describes snapshotMetrics[i]
	kind  *prometheus.Desc
	thr   *prometheus.Desc
}

func newSnapshotCollector(src Source) *snapshotCollector {
	c := &snapshotCollector{src: src}
	for _, m := range snapshotMetrics {
		var labels []string
		switch {
		case m.tmpl != nil:
			labels = templateLabels
		case m.proxy != nil:
			labels = proxyLabels
		}
		c.descs = append(c.descs, prometheus.NewDesc(metricPrefix+m.name, m.help, labels, nil))
	}
	c.kind = prometheus.NewDesc(metricPrefix+errorKindName, errorKindHelp, append(slices.Clone(templateLabels), "kind"), nil)
	c.thr = prometheus.NewDesc(metricPrefix+throttledName, throttledHelp, []string{"reason"}, nil)
	return c
}

// Describe implements prometheus.Collector.
func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
	ch <- c.kind
	ch <- c.thr
}

// Collect implements prometheus.Collector. Order does not matter: the
// registry sorts families and samples.
func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Snapshot()
	for i, m := range snapshotMetrics {
		d := c.descs[i]
		switch {
		case m.tmpl != nil:
			for _, t := range s.Templates {
				ch <- prometheus.MustNewConstMetric(d, m.typ, m.tmpl(t), labelValue(t.Source), labelValue(t.Dest))
			}
		case m.proxy != nil:
			for _, p := range s.Proxies {
				if m.supervisedOnly && !p.Supervised {
					continue
				}
				ch <- prometheus.MustNewConstMetric(d, m.typ, m.proxy(p), labelValue(p.Name))
			}
		default:
			ch <- prometheus.MustNewConstMetric(d, m.typ, m.global(s))
		}
	}
	for _, t := range s.Templates {
		c.collectErrorKind(ch, t)
	}
	for _, r := range throttleReasons {
		ch <- prometheus.MustNewConstMetric(c.thr, counterValue, float64(s.Runner.Throttled[r]), r)
	}
}

func (c *snapshotCollector) collectErrorKind(ch chan<- prometheus.Metric, t Template) {
	src, dest := labelValue(t.Source), labelValue(t.Dest)
	for _, k := range errorKinds {
		ch <- prometheus.MustNewConstMetric(c.kind, gaugeValue, b2f(t.LastErrorKind == k), src, dest, k)
	}
	// A kind this list does not know yet still shows, rather than vanish.
	if t.LastErrorKind != "" && !slices.Contains(errorKinds, t.LastErrorKind) {
		ch <- prometheus.MustNewConstMetric(c.kind, gaugeValue, 1, src, dest, labelValue(t.LastErrorKind))
	}
}

// latencyBuckets run from 1ms to about 16s in doublings: validation and
// reloads take milliseconds when all is well and seconds when a proxy has
// a large config or is in trouble; a timeout lands in +Inf.
var latencyBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)

// Histograms are the renderer's latency histograms. The parts that time
// things call its Observe methods; Handler serves them. A nil *Histograms
// observes nothing, so tests and callers without metrics can pass nil.
type Histograms struct {
	validate, swap, reload, runtime *prometheus.HistogramVec
	// extra are families of other parts (the Consul mirror) served next
	// to these; added before the status server starts.
	extra []prometheus.Collector
}

// Add serves more families (the Consul mirror's) on /metrics. Call it
// before Handler.
func (h *Histograms) Add(cs ...prometheus.Collector) {
	if h != nil {
		h.extra = append(h.extra, cs...)
	}
}

// NewHistograms returns empty histograms, registered nowhere yet.
func NewHistograms() *Histograms {
	vec := func(name, help string, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: metricPrefix + name, Help: help, Buckets: latencyBuckets,
		}, labels)
	}
	return &Histograms{
		validate: vec("validate_seconds", "Time the proxy took to validate a rendered config (nginx -t, haproxy -c, caddy validate).", "template"),
		swap:     vec("render_to_swap_seconds", "Time from a render arriving from consul-template to the live file being swapped.", "template"),
		reload:   vec("reload_seconds", "Time a proxy reload and its verification took, by result (ok, failed).", "proxy", "result"),
		runtime:  vec("runtime_apply_seconds", "Time a membership change applied through the proxy's runtime interface took, verification included.", "proxy"),
	}
}

// ObserveValidate records how long validating a render of template (its
// source path, as in the template label of the other families) took.
func (h *Histograms) ObserveValidate(template string, d time.Duration) {
	if h == nil {
		return
	}
	h.validate.WithLabelValues(labelValue(template)).Observe(seconds(d))
}

// ObserveSwap records the time from a render of template arriving to the
// live file being swapped.
func (h *Histograms) ObserveSwap(template string, d time.Duration) {
	if h == nil {
		return
	}
	h.swap.WithLabelValues(labelValue(template)).Observe(seconds(d))
}

// ObserveReload records how long a reload of proxy (its key, as in the
// proxy label) and its verification took; ok says whether it took.
func (h *Histograms) ObserveReload(proxy string, d time.Duration, ok bool) {
	if h == nil {
		return
	}
	result := "failed"
	if ok {
		result = "ok"
	}
	h.reload.WithLabelValues(labelValue(proxy), result).Observe(seconds(d))
}

// ObserveRuntimeApply records how long a runtime apply of a membership
// change to proxy and its verification took.
func (h *Histograms) ObserveRuntimeApply(proxy string, d time.Duration) {
	if h == nil {
		return
	}
	h.runtime.WithLabelValues(labelValue(proxy)).Observe(seconds(d))
}

// seconds clamps at 0: a negative observation would lower the sum and
// land in the smallest bucket, hiding a clock problem in a latency one.
func seconds(d time.Duration) float64 { return max(d, 0).Seconds() }

func (h *Histograms) collectors() []prometheus.Collector {
	if h == nil {
		return nil
	}
	return append([]prometheus.Collector{h.validate, h.swap, h.reload, h.runtime}, h.extra...)
}

// metricsHandler serves src and h from a registry of its own: the global
// one would collect whatever any library registers there, and a second
// Handler (tests) would collide with the first.
func metricsHandler(src Source, h *Histograms) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newSnapshotCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	reg.MustRegister(h.collectors()...)
	// ContinueOnError: one family that fails (no /proc for the process
	// collector, a duplicate template) must not blank the others; the
	// failure is counted in promhttp_metric_handler_errors_total.
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg,
	})
}
