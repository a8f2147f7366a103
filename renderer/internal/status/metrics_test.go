package status

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape GETs /metrics from h through a real server, as Prometheus would
// (compression and content negotiation included), and parses the text.
func scrape(t *testing.T, h http.Handler) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s\n%s", resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, b)
	}
	return string(b), fams
}

func scrapeSnap(t *testing.T, s Snapshot, h *Histograms) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	return scrape(t, Handler(SourceFunc(func() Snapshot { return s }), h))
}

// metricWith returns the sample of family name whose labels are exactly
// labels.
func metricWith(fams map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, lp := range m.GetLabel() {
			if v, ok := labels[lp.GetName()]; !ok || v != lp.GetValue() {
				continue next
			}
		}
		return m
	}
	return nil
}

func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return math.NaN()
}

// ours returns the families of the renderer, without Go, process and
// promhttp ones.
func ours(fams map[string]*dto.MetricFamily) map[string]*dto.MetricFamily {
	out := map[string]*dto.MetricFamily{}
	for n, f := range fams {
		if strings.HasPrefix(n, metricPrefix) {
			out[n] = f
		}
	}
	return out
}

// expectedSamples counts the snapshot samples s should give, from the
// list of families written out here (not from snapshotMetrics), so a
// family dropped from the table fails the test.
func expectedSamples(s Snapshot) int {
	const (
		perTemplate   = 7 + 2 + 4 // old, new counters, one per error kind
		perProxy      = 5 + 1 + 3 // old, reload_pending, runtime applies/failures/fallbacks
		perSupervised = 3         // proxy_up, deaths, restarts
		globals       = 3 + 2 + 4 // old, consul_errors_total, consul_up, consul_throttled, missing deps, throttled_total x2 reasons
	)
	n := globals + perTemplate*len(s.Templates) + perProxy*len(s.Proxies)
	for _, p := range s.Proxies {
		if p.Supervised {
			n += perSupervised
		}
	}
	for _, t := range s.Templates {
		if t.LastErrorKind != "" && !slices.Contains(errorKinds, t.LastErrorKind) {
			n++
		}
	}
	return n
}

func countSamples(fams map[string]*dto.MetricFamily) int {
	n := 0
	for _, f := range fams {
		n += len(f.GetMetric())
	}
	return n
}

func TestMetrics(t *testing.T) {
	hostile := `/srv/we"ird\dir` + "\n" + `x.tmpl`
	for _, tc := range []struct {
		name string
		snap func() Snapshot
		want map[string]string // "name label=value,label=value" -> value
		line []string          // raw lines, escaping as written
	}{
		{
			name: "healthy",
			snap: good,
			want: map[string]string{
				"switchyard_renderer_ready": "1",
				"switchyard_renderer_swaps_total template=/t/b.tmpl,dest=/srv/b.conf":                 "2",
				"switchyard_renderer_renders_rejected_total template=/t/b.tmpl,dest=/srv/b.conf":      "0",
				"switchyard_renderer_stale_guard_held template=/t/a.tmpl,dest=/srv/a.conf":            "0",
				"switchyard_renderer_last_swap_timestamp_seconds template=/t/a.tmpl,dest=/srv/a.conf": "1741064767.25",
				"switchyard_renderer_reloads_total proxy=nginx:/srv/b.conf":                           "1",
				"switchyard_renderer_reload_failures_total proxy=nginx:/srv/b.conf":                   "0",
				"switchyard_renderer_last_reload_success proxy=nginx:/srv/b.conf":                     "1",
				"switchyard_renderer_runner_rebuilds_total":                                           "1",
				"switchyard_renderer_runner_outage_rebuilds_total":                                    "2",
				"switchyard_renderer_template_accepted template=/t/a.tmpl,dest=/srv/a.conf":           "1",
				"switchyard_renderer_template_error template=/t/a.tmpl,dest=/srv/a.conf":              "0",
				"switchyard_renderer_last_reload_timestamp_seconds proxy=nginx:/srv/b.conf":           "1741064767.25",
				"switchyard_renderer_stale_guard_holds_total template=/t/b.tmpl,dest=/srv/b.conf":     "0",
				"switchyard_renderer_rollbacks_total proxy=nginx:/srv/b.conf":                         "0",
				"switchyard_renderer_template_error template=/t/b.tmpl,dest=/srv/b.conf":              "0",
				"switchyard_renderer_last_swap_timestamp_seconds template=/t/b.tmpl,dest=/srv/b.conf": "1741064767.25",
				"switchyard_renderer_stale_guard_held template=/t/b.tmpl,dest=/srv/b.conf":            "0",
				"switchyard_renderer_template_accepted template=/t/b.tmpl,dest=/srv/b.conf":           "1",
				"switchyard_renderer_renders_rejected_total template=/t/a.tmpl,dest=/srv/a.conf":      "0",
				"switchyard_renderer_swaps_total template=/t/a.tmpl,dest=/srv/a.conf":                 "1",
				"switchyard_renderer_stale_guard_holds_total template=/t/a.tmpl,dest=/srv/a.conf":     "0",
				// New families, all quiet.
				"switchyard_renderer_template_write_errors_total template=/t/a.tmpl,dest=/srv/a.conf":      "0",
				"switchyard_renderer_template_exec_errors_total template=/t/a.tmpl,dest=/srv/a.conf":       "0",
				"switchyard_renderer_template_error_kind template=/t/a.tmpl,dest=/srv/a.conf,kind=write":   "0",
				"switchyard_renderer_template_error_kind template=/t/b.tmpl,dest=/srv/b.conf,kind=execute": "0",
				"switchyard_renderer_reload_pending proxy=nginx:/srv/b.conf":                               "0",
				"switchyard_renderer_consul_errors_total":                                                  "0",
				"switchyard_renderer_consul_up":                                                            "1",
			},
		},
		{
			name: "rejected, held, failed reload",
			snap: func() Snapshot {
				s := rejected()
				s.Templates[0].Holds, s.Templates[0].HeldSince = 1, t0
				s.Proxies[0].ReloadFailures, s.Proxies[0].Rollbacks, s.Proxies[0].LastError = 2, 1, "timeout"
				return s
			},
			want: map[string]string{
				"switchyard_renderer_ready": "0",
				"switchyard_renderer_renders_rejected_total template=/t/b.tmpl,dest=/srv/b.conf":  "3",
				"switchyard_renderer_template_error template=/t/b.tmpl,dest=/srv/b.conf":          "1",
				"switchyard_renderer_stale_guard_held template=/t/b.tmpl,dest=/srv/b.conf":        "1",
				"switchyard_renderer_stale_guard_holds_total template=/t/b.tmpl,dest=/srv/b.conf": "1",
				"switchyard_renderer_reload_failures_total proxy=nginx:/srv/b.conf":               "2",
				"switchyard_renderer_rollbacks_total proxy=nginx:/srv/b.conf":                     "1",
				"switchyard_renderer_last_reload_success proxy=nginx:/srv/b.conf":                 "0",
			},
		},
		{
			name: "write failure, supervised proxy down, Consul down",
			snap: func() Snapshot {
				s := good()
				s.Templates[0].LastError, s.Templates[0].LastErrorKind = "no space left on device", KindWrite
				s.Templates[0].WriteErrors, s.Templates[1].ExecErrors = 4, 2
				s.Proxies[0].Supervised, s.Proxies[0].Up, s.Proxies[0].Deaths, s.Proxies[0].Restarts = true, false, 3, 2
				s.Proxies[0].ReloadPending = true
				s.Runner.ConsulErrors, s.Runner.ConsulDownSince = 9, t0
				return s
			},
			want: map[string]string{
				"switchyard_renderer_ready": "0",
				"switchyard_renderer_template_error template=/t/b.tmpl,dest=/srv/b.conf":                      "1",
				"switchyard_renderer_template_write_errors_total template=/t/b.tmpl,dest=/srv/b.conf":         "4",
				"switchyard_renderer_template_exec_errors_total template=/t/a.tmpl,dest=/srv/a.conf":          "2",
				"switchyard_renderer_template_error_kind template=/t/b.tmpl,dest=/srv/b.conf,kind=write":      "1",
				"switchyard_renderer_template_error_kind template=/t/b.tmpl,dest=/srv/b.conf,kind=validation": "0",
				"switchyard_renderer_template_error_kind template=/t/b.tmpl,dest=/srv/b.conf,kind=execute":    "0",
				"switchyard_renderer_template_error_kind template=/t/b.tmpl,dest=/srv/b.conf,kind=rollback":   "0",
				"switchyard_renderer_template_error_kind template=/t/a.tmpl,dest=/srv/a.conf,kind=write":      "0",
				"switchyard_renderer_proxy_up proxy=nginx:/srv/b.conf":                                        "0",
				"switchyard_renderer_proxy_deaths_total proxy=nginx:/srv/b.conf":                              "3",
				"switchyard_renderer_proxy_restarts_total proxy=nginx:/srv/b.conf":                            "2",
				"switchyard_renderer_reload_pending proxy=nginx:/srv/b.conf":                                  "1",
				"switchyard_renderer_consul_errors_total":                                                     "9",
				"switchyard_renderer_consul_up":                                                               "0",
			},
		},
		{
			name: "label values are escaped",
			snap: func() Snapshot {
				return Snapshot{
					Templates: []Template{{Source: hostile, Dest: `C:\srv\a "b".conf`, Proxy: "nginx:" + hostile, Rejected: 1}},
					Proxies:   []Proxy{{Name: "nginx:" + hostile, Reloads: 4}},
				}
			},
			want: map[string]string{
				"switchyard_renderer_renders_rejected_total template=" + hostile + `,dest=C:\srv\a "b".conf`: "1",
				"switchyard_renderer_reloads_total proxy=nginx:" + hostile:                                   "4",
				"switchyard_renderer_ready": "0",
			},
			// client_golang writes labels sorted by name: dest before
			// template. Queries match labels by name, so order is free.
			line: []string{
				`switchyard_renderer_renders_rejected_total{dest="C:\\srv\\a \"b\".conf",template="/srv/we\"ird\\dir\nx.tmpl"} 1`,
				`switchyard_renderer_reloads_total{proxy="nginx:/srv/we\"ird\\dir\nx.tmpl"} 4`,
			},
		},
		{
			name: "nothing configured: globals only",
			snap: func() Snapshot { return Snapshot{} },
			want: map[string]string{
				"switchyard_renderer_ready": "1", "switchyard_renderer_runner_rebuilds_total": "0",
				"switchyard_renderer_consul_up": "1",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, fams := scrapeSnap(t, tc.snap(), nil)
			for key, want := range tc.want {
				name, lbl, _ := strings.Cut(key, " ")
				labels := map[string]string{}
				if lbl != "" {
					// The test values hold no "," or "=" of their own.
					for _, kv := range strings.Split(lbl, ",") {
						k, v, _ := strings.Cut(kv, "=")
						labels[k] = v
					}
				}
				m := metricWith(fams, name, labels)
				if m == nil {
					t.Errorf("no sample %s %v in\n%s", name, labels, body)
					continue
				}
				w, err := strconv.ParseFloat(want, 64)
				if err != nil {
					t.Fatal(err)
				}
				if got := sampleValue(m); got != w {
					t.Errorf("%s %v = %v, want %v", name, labels, got, w)
				}
			}
			for _, l := range tc.line {
				if !strings.Contains(body, l+"\n") {
					t.Errorf("line %s missing from\n%s", l, body)
				}
			}
			if n, want := countSamples(ours(fams)), expectedSamples(tc.snap()); n != want {
				t.Errorf("%d samples, want %d\n%s", n, want, body)
			}
		})
	}
}

// TestFamilies pins every family: name, type, label names and, for the
// families dashboards already use, the help text.
func TestFamilies(t *testing.T) {
	tl, pl := "dest,template", "proxy"
	for _, f := range []struct {
		name string
		typ  dto.MetricType
		lbls string // sorted, comma separated
		help string // "" = not pinned
	}{
		{"ready", dto.MetricType_GAUGE, "", "1 when /ready answers 200: every template had a render accepted, none failed to write, execute or parse, a supervised proxy is up and the last reload of every proxy took."},
		{"template_accepted", dto.MetricType_GAUGE, tl, "1 once a render of the template has been accepted."},
		{"template_error", dto.MetricType_GAUGE, tl, "1 while the template's last render was rejected."},
		{"swaps_total", dto.MetricType_COUNTER, tl, "Rendered configs swapped into the live file."},
		{"last_swap_timestamp_seconds", dto.MetricType_GAUGE, tl, "Unix time of the last swap of the live file (0: never)."},
		{"renders_rejected_total", dto.MetricType_COUNTER, tl, "Rendered configs rejected by validation (or rolled back); the live file was not changed."},
		{"stale_guard_held", dto.MetricType_GAUGE, tl, "1 while the stale guard holds a render of the template."},
		{"stale_guard_holds_total", dto.MetricType_COUNTER, tl, "Renders held by the stale guard."},
		{"reloads_total", dto.MetricType_COUNTER, pl, "Proxy reloads that took (verified)."},
		{"reload_failures_total", dto.MetricType_COUNTER, pl, "Proxy reloads that did not take."},
		{"rollbacks_total", dto.MetricType_COUNTER, pl, "Failed reloads after which the previous good config was restored."},
		{"last_reload_timestamp_seconds", dto.MetricType_GAUGE, pl, "Unix time of the last reload attempt (0: never)."},
		{"last_reload_success", dto.MetricType_GAUGE, pl, "1 unless the last reload of the proxy did not take."},
		{"runner_rebuilds_total", dto.MetricType_COUNTER, "", "consul-template runners rebuilt after they died."},
		{"runner_outage_rebuilds_total", dto.MetricType_COUNTER, "", "consul-template runners rebuilt after a Consul outage."},
		{"template_write_errors_total", dto.MetricType_COUNTER, tl, ""},
		{"template_exec_errors_total", dto.MetricType_COUNTER, tl, ""},
		{"template_error_kind", dto.MetricType_GAUGE, "dest,kind,template", ""},
		{"reload_pending", dto.MetricType_GAUGE, pl, ""},
		{"proxy_up", dto.MetricType_GAUGE, pl, ""},
		{"proxy_deaths_total", dto.MetricType_COUNTER, pl, ""},
		{"proxy_restarts_total", dto.MetricType_COUNTER, pl, ""},
		{"consul_errors_total", dto.MetricType_COUNTER, "", ""},
		{"consul_up", dto.MetricType_GAUGE, "", ""},
		{"validate_seconds", dto.MetricType_HISTOGRAM, "template", ""},
		{"render_to_swap_seconds", dto.MetricType_HISTOGRAM, "template", ""},
		{"reload_seconds", dto.MetricType_HISTOGRAM, "proxy,result", ""},
		{"runtime_applies_total", dto.MetricType_COUNTER, pl, ""},
		{"runtime_apply_failures_total", dto.MetricType_COUNTER, pl, ""},
		{"runtime_fallbacks_total", dto.MetricType_COUNTER, pl, ""},
		{"runtime_apply_seconds", dto.MetricType_HISTOGRAM, "proxy", ""},
	} {
		t.Run(f.name, func(t *testing.T) {
			s := good()
			s.Proxies[0].Supervised = true
			h := NewHistograms()
			h.ObserveValidate("/t/a.tmpl", time.Millisecond)
			h.ObserveSwap("/t/a.tmpl", time.Millisecond)
			h.ObserveReload("nginx:/srv/b.conf", time.Millisecond, true)
			h.ObserveRuntimeApply("nginx:/srv/b.conf", time.Millisecond)
			_, fams := scrapeSnap(t, s, h)
			fam := fams[metricPrefix+f.name]
			if fam == nil {
				t.Fatalf("family missing")
			}
			if fam.GetType() != f.typ {
				t.Errorf("type %v, want %v", fam.GetType(), f.typ)
			}
			if f.help != "" && fam.GetHelp() != f.help {
				t.Errorf("help %q, want %q", fam.GetHelp(), f.help)
			}
			if fam.GetHelp() == "" || strings.ContainsAny(fam.GetHelp(), "\n\\") {
				t.Errorf("help must be there and plain: %q", fam.GetHelp())
			}
			for _, m := range fam.GetMetric() {
				var names []string
				for _, lp := range m.GetLabel() {
					names = append(names, lp.GetName())
				}
				slices.Sort(names)
				if got := strings.Join(names, ","); got != f.lbls {
					t.Errorf("labels %s, want %s", got, f.lbls)
				}
			}
		})
	}
}

func TestFamiliesOnlyThese(t *testing.T) {
	s := good()
	s.Proxies[0].Supervised = true
	s.Templates[0].LastErrorKind = "something new"
	h := NewHistograms()
	h.ObserveValidate("/t/a.tmpl", time.Millisecond)
	h.ObserveSwap("/t/a.tmpl", time.Millisecond)
	h.ObserveReload("nginx:/srv/b.conf", time.Millisecond, false)
	body, fams := scrapeSnap(t, s, h)
	if n := len(ours(fams)); n != len(snapshotMetrics)+2+3 {
		t.Errorf("%d families of ours, want %d", n, len(snapshotMetrics)+2+3)
	}
	for n, f := range ours(fams) {
		isCounter := f.GetType() == dto.MetricType_COUNTER
		if strings.HasSuffix(n, "_total") != isCounter {
			t.Errorf("counters and only counters end in _total: %s %v", n, f.GetType())
		}
	}
	// An error kind this package does not know yet still shows.
	m := metricWith(fams, metricPrefix+"template_error_kind",
		map[string]string{"template": "/t/b.tmpl", "dest": "/srv/b.conf", "kind": "something new"})
	if m == nil || sampleValue(m) != 1 {
		t.Errorf("unknown kind not exposed:\n%s", body)
	}
}

func TestMetricsLint(t *testing.T) {
	s := good()
	s.Proxies[0].Supervised = true
	s.Templates[0].LastErrorKind = KindRollback
	problems, err := testutil.CollectAndLint(newSnapshotCollector(SourceFunc(func() Snapshot { return s })))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	h := NewHistograms()
	h.ObserveReload("p", time.Second, true)
	for _, c := range h.collectors() {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

// The pedantic registry checks that Collect sends only what Describe
// announced, with the announced labels.
func TestCollectorConsistent(t *testing.T) {
	s := good()
	s.Proxies[0].Supervised = true
	s.Templates[1].LastErrorKind = "other"
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newSnapshotCollector(SourceFunc(func() Snapshot { return s })))
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
}

func TestMetricsGoAndProcess(t *testing.T) {
	_, fams := scrapeSnap(t, good(), nil)
	want := []string{"go_goroutines", "go_memstats_alloc_bytes"}
	if runtime.GOOS == "linux" {
		want = append(want, "process_cpu_seconds_total", "process_start_time_seconds")
	}
	for _, n := range want {
		if fams[n] == nil {
			t.Errorf("family %s missing", n)
		}
	}
	for n := range fams {
		if strings.HasPrefix(n, metricPrefix+"validate") || strings.HasPrefix(n, metricPrefix+"reload_seconds") {
			t.Errorf("nil Histograms must serve no histogram: %s", n)
		}
	}
}

// /metrics serves a registry of its own: what a library registers in the
// global one does not show.
func TestMetricsPrivateRegistry(t *testing.T) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "status_test_global_leak_total", Help: "test"})
	if err := prometheus.Register(c); err != nil {
		t.Fatal(err)
	}
	defer prometheus.Unregister(c)
	_, fams := scrapeSnap(t, good(), nil)
	if fams["status_test_global_leak_total"] != nil {
		t.Errorf("/metrics serves the global registry")
	}
}

func TestMetricsHostileInput(t *testing.T) {
	t.Run("invalid UTF-8 in a path", func(t *testing.T) {
		s := good()
		s.Templates[0].Source = "/t/\xff.tmpl"
		s.Proxies[0].Name = "nginx:/srv/\xfe.conf"
		h := NewHistograms()
		h.ObserveValidate("/t/\xff.tmpl", time.Millisecond)
		h.ObserveReload("nginx:/srv/\xfe.conf", time.Millisecond, true)
		_, fams := scrapeSnap(t, s, h)
		if metricWith(fams, metricPrefix+"swaps_total", map[string]string{"template": "/t/\uFFFD.tmpl", "dest": "/srv/b.conf"}) == nil {
			t.Errorf("template with invalid UTF-8 not exposed")
		}
		if metricWith(fams, metricPrefix+"reloads_total", map[string]string{"proxy": "nginx:/srv/\uFFFD.conf"}) == nil {
			t.Errorf("proxy with invalid UTF-8 not exposed")
		}
	})
	t.Run("duplicate template does not blank the scrape", func(t *testing.T) {
		s := good()
		s.Templates = append(s.Templates, s.Templates[0])
		src := SourceFunc(func() Snapshot { return s })
		hd := Handler(src, nil)
		scrape(t, hd)
		_, fams := scrape(t, hd)
		if m := metricWith(fams, metricPrefix+"ready", map[string]string{}); m == nil || sampleValue(m) != 1 {
			t.Errorf("ready missing after a duplicate")
		}
		if metricWith(fams, metricPrefix+"swaps_total", map[string]string{"template": "/t/b.tmpl", "dest": "/srv/b.conf"}) == nil {
			t.Errorf("the first of the duplicates must still show")
		}
		m := metricWith(fams, "promhttp_metric_handler_errors_total", map[string]string{"cause": "gathering"})
		if m == nil || sampleValue(m) < 1 {
			t.Errorf("the gathering error must be counted")
		}
	})
}

// bucket returns the cumulative count of the bucket with upper bound le.
func bucket(t *testing.T, m *dto.Metric, le float64) uint64 {
	t.Helper()
	for _, b := range m.GetHistogram().GetBucket() {
		if b.GetUpperBound() == le {
			return b.GetCumulativeCount()
		}
	}
	t.Fatalf("no bucket le=%v", le)
	return 0
}

func TestHistograms(t *testing.T) {
	h := NewHistograms()
	h.ObserveValidate("/t/a.tmpl", 3*time.Millisecond)
	h.ObserveValidate("/t/a.tmpl", 20*time.Millisecond)
	h.ObserveValidate("/t/b.tmpl", 5*time.Second)
	h.ObserveSwap("/t/a.tmpl", 40*time.Millisecond)
	h.ObserveSwap("/t/a.tmpl", -time.Second) // clock trouble: counted as 0
	h.ObserveReload("nginx:/srv/b.conf", 300*time.Millisecond, true)
	h.ObserveReload("nginx:/srv/b.conf", time.Minute, false)
	_, fams := scrapeSnap(t, good(), h)

	v := metricWith(fams, metricPrefix+"validate_seconds", map[string]string{"template": "/t/a.tmpl"})
	if v == nil {
		t.Fatalf("validate_seconds{template=/t/a.tmpl} missing")
	}
	hv := v.GetHistogram()
	if hv.GetSampleCount() != 2 || math.Abs(hv.GetSampleSum()-0.023) > 1e-9 {
		t.Errorf("validate count %d sum %v, want 2 0.023", hv.GetSampleCount(), hv.GetSampleSum())
	}
	// 15 bounds, 1ms..16.384s, and +Inf as the text format writes it.
	if bs := hv.GetBucket(); len(bs) != 16 || bs[0].GetUpperBound() != 0.001 || !math.IsInf(bs[15].GetUpperBound(), 1) {
		t.Errorf("buckets %v, want 0.001..16.384 and +Inf", bs)
	}
	for le, want := range map[float64]uint64{0.002: 0, 0.004: 1, 0.016: 1, 0.032: 2, 16.384: 2} {
		if got := bucket(t, v, le); got != want {
			t.Errorf("validate le=%v: %d, want %d", le, got, want)
		}
	}
	if b := metricWith(fams, metricPrefix+"validate_seconds", map[string]string{"template": "/t/b.tmpl"}); b == nil ||
		bucket(t, b, 4.096) != 0 || bucket(t, b, 8.192) != 1 {
		t.Errorf("validate of b: 5s belongs in le=8.192")
	}

	sw := metricWith(fams, metricPrefix+"render_to_swap_seconds", map[string]string{"template": "/t/a.tmpl"})
	if sw == nil || sw.GetHistogram().GetSampleCount() != 2 || bucket(t, sw, 0.001) != 1 || bucket(t, sw, 0.064) != 2 ||
		sw.GetHistogram().GetSampleSum() != 0.04 {
		t.Errorf("render_to_swap_seconds: %v", sw)
	}

	ok := metricWith(fams, metricPrefix+"reload_seconds", map[string]string{"proxy": "nginx:/srv/b.conf", "result": "ok"})
	failed := metricWith(fams, metricPrefix+"reload_seconds", map[string]string{"proxy": "nginx:/srv/b.conf", "result": "failed"})
	if ok == nil || failed == nil {
		t.Fatalf("reload_seconds by result missing")
	}
	if bucket(t, ok, 0.256) != 0 || bucket(t, ok, 0.512) != 1 {
		t.Errorf("reload ok: 300ms belongs in le=0.512")
	}
	// A minute is past the last bucket: only +Inf (the sample count) has it.
	if bucket(t, failed, 16.384) != 0 || failed.GetHistogram().GetSampleCount() != 1 {
		t.Errorf("reload failed: a minute belongs in +Inf only")
	}
}

func TestHistogramsNil(t *testing.T) {
	var h *Histograms
	h.ObserveValidate("t", time.Second)
	h.ObserveSwap("t", time.Second)
	h.ObserveReload("p", time.Second, true)
	if h.collectors() != nil {
		t.Errorf("nil Histograms has collectors")
	}
}

// Two handlers may serve the same Histograms (each has its own registry),
// and scrapes run concurrently with observations.
func TestHistogramsConcurrent(t *testing.T) {
	h := NewHistograms()
	src := SourceFunc(good)
	h1, h2 := Handler(src, h), Handler(src, h)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 20 {
				h.ObserveValidate("/t/a.tmpl", time.Duration(i)*time.Millisecond)
				h.ObserveReload("nginx:/srv/b.conf", time.Millisecond, i%2 == 0)
			}
		})
		wg.Go(func() {
			hd := h1
			if i%2 == 1 {
				hd = h2
			}
			rec := httptest.NewRecorder()
			hd.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			if rec.Code != http.StatusOK {
				t.Errorf("scrape: %d", rec.Code)
			}
		})
	}
	wg.Wait()
	_, fams := scrape(t, h2)
	if m := metricWith(fams, metricPrefix+"validate_seconds", map[string]string{"template": "/t/a.tmpl"}); m == nil ||
		m.GetHistogram().GetSampleCount() != 160 {
		t.Errorf("want 160 validate observations: %v", m)
	}
}
