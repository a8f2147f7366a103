package status

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 250_000_000, time.UTC)

// nginxOutput is what `nginx -t` prints for a bad directive: the proxy's
// own explanation, which /status must carry.
const nginxOutput = `nginx: [emerg] unknown directive "no_such_directive" in /srv/.nginx.conf.staged-1:7
nginx: configuration file /srv/.nginx.conf.staged-1 test failed`

func good() Snapshot {
	return Snapshot{
		Templates: []Template{
			{Source: "/t/b.tmpl", Dest: "/srv/b.conf", Proxy: "nginx:/srv/b.conf", Accepted: true, Swaps: 2, LastSwap: t0},
			{Source: "/t/a.tmpl", Dest: "/srv/a.conf", Accepted: true, Swaps: 1, LastSwap: t0},
		},
		Proxies: []Proxy{{Name: "nginx:/srv/b.conf", Reloads: 1, LastReload: t0}},
		Runner:  Runner{Rebuilds: 1, OutageRebuilds: 2},
	}
}

func rejected() Snapshot {
	s := good()
	s.Templates[0].LastError = "nginx rejected /srv/.nginx.conf.staged-1: exit status 1: " + nginxOutput
	s.Templates[0].Rejected = 3
	return s
}

func TestReady(t *testing.T) {
	for _, tc := range []struct {
		name   string
		snap   func() Snapshot
		ok     bool
		reason string
	}{
		{"all accepted, reloads took", good, true, ""},
		{"nothing configured", func() Snapshot { return Snapshot{} }, true, ""},
		{"rejected after an accepted render still serves", rejected, true, ""},
		{"no render yet", func() Snapshot {
			s := good()
			s.Templates[1].Accepted = false
			return s
		}, false, "template /t/a.tmpl -> /srv/a.conf: no render accepted yet"},
		{"only rejected renders", func() Snapshot {
			s := good()
			s.Templates[0].Accepted, s.Templates[0].Rejected, s.Templates[0].LastError = false, 2, "bad\nconfig"
			return s
		}, false, "template /t/b.tmpl -> /srv/b.conf: no render accepted yet (2 rejected, see /status)"},
		{"last reload did not take", func() Snapshot {
			s := good()
			s.Proxies[0].LastError = "nginx reload did not take: timeout"
			return s
		}, false, "proxy nginx:/srv/b.conf: last reload did not take (see /status)"},
		{"first unready template in sorted order wins", func() Snapshot {
			s := good()
			s.Templates[0].Accepted, s.Templates[1].Accepted = false, false
			return s
		}, false, "template /t/a.tmpl -> /srv/a.conf: no render accepted yet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, reason := tc.snap().Ready()
			if ok != tc.ok || reason != tc.reason {
				t.Errorf("Ready() = %v %q, want %v %q", ok, reason, tc.ok, tc.reason)
			}
		})
	}
}

func TestHandler(t *testing.T) {
	notReady := func() Snapshot {
		s := good()
		s.Templates[0].Accepted = false
		return s
	}
	for _, tc := range []struct {
		name, method, path string
		snap               func() Snapshot
		code               int
		ctype              string
		body               []string // substrings
		exact              string   // whole body, if set
	}{
		{name: "healthz", method: "GET", path: "/healthz", snap: notReady, code: 200, exact: "ok\n"},
		{name: "healthz HEAD", method: "HEAD", path: "/healthz", snap: good, code: 200},
		{name: "ready", method: "GET", path: "/ready", snap: good, code: 200, exact: "ready\n"},
		{name: "not ready", method: "GET", path: "/ready", snap: notReady, code: 503,
			exact: "not ready: template /t/b.tmpl -> /srv/b.conf: no render accepted yet\n"},
		{name: "status", method: "GET", path: "/status", snap: good, code: 200, ctype: "application/json",
			body: []string{`"ready": true`, `"last_swap": "2025-03-04T05:06:07.25Z"`, `"outage_rebuilds": 2`}},
		{name: "metrics", method: "GET", path: "/metrics", snap: good, code: 200, ctype: "text/plain; version=0.0.4",
			body: []string{"switchyard_renderer_ready 1\n", `switchyard_renderer_reloads_total{proxy="nginx:/srv/b.conf"} 1` + "\n"}},
		{name: "POST refused", method: "POST", path: "/status", snap: good, code: 405},
		{name: "unknown path", method: "GET", path: "/", snap: good, code: 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			Handler(SourceFunc(tc.snap)).ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.code {
				t.Fatalf("%s %s: %d, want %d\n%s", tc.method, tc.path, rec.Code, tc.code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
				t.Errorf("Content-Type %q, want %q...", ct, tc.ctype)
			}
			body := rec.Body.String()
			if tc.exact != "" && body != tc.exact {
				t.Errorf("body %q, want %q", body, tc.exact)
			}
			for _, sub := range tc.body {
				if !strings.Contains(body, sub) {
					t.Errorf("body lacks %q:\n%s", sub, body)
				}
			}
		})
	}
}

func getJSON(t *testing.T, s Snapshot) statusDoc {
	t.Helper()
	rec := httptest.NewRecorder()
	Handler(SourceFunc(func() Snapshot { return s })).ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
	var doc statusDoc
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("%v\n%s", err, rec.Body)
	}
	return doc
}

func TestStatusJSON(t *testing.T) {
	t.Run("rejected template carries the proxy's output", func(t *testing.T) {
		doc := getJSON(t, rejected())
		tp := doc.Templates[1] // sorted: a.tmpl, b.tmpl
		if tp.Source != "/t/b.tmpl" || tp.Dest != "/srv/b.conf" || tp.Proxy != "nginx:/srv/b.conf" {
			t.Fatalf("template identity: %+v", tp)
		}
		if !strings.Contains(tp.LastError, `unknown directive "no_such_directive"`) || tp.Rejected != 3 || !tp.Accepted {
			t.Errorf("rejection not exposed: %+v", tp)
		}
		if !doc.Ready {
			t.Errorf("a rejection after an accepted render keeps the last config serving: ready")
		}
	})

	t.Run("sorted, stable field names, nulls for never", func(t *testing.T) {
		s := good()
		s.Templates[1].LastSwap = time.Time{}
		s.Proxies = append(s.Proxies, Proxy{Name: "haproxy:/srv/h.cfg"})
		rec := httptest.NewRecorder()
		Handler(SourceFunc(func() Snapshot { return s })).ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
		var raw struct {
			Templates []map[string]any `json:"templates"`
			Proxies   []map[string]any `json:"proxies"`
			Runner    map[string]any   `json:"runner"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
			t.Fatal(err)
		}
		wantT := []string{"accepted", "dest", "held", "held_backends_after", "held_backends_before", "held_emptied",
			"held_since", "holds", "last_error", "last_swap", "proxy", "rejected", "source", "swaps"}
		if got := keys(raw.Templates[0]); got != strings.Join(wantT, ",") {
			t.Errorf("template fields: %s", got)
		}
		wantP := []string{"last_reload", "last_reload_error", "name", "reload_failures", "reloads", "rollbacks"}
		if got := keys(raw.Proxies[0]); got != strings.Join(wantP, ",") {
			t.Errorf("proxy fields: %s", got)
		}
		if got := keys(raw.Runner); got != "outage_rebuilds,rebuilds" {
			t.Errorf("runner fields: %s", got)
		}
		if raw.Templates[0]["source"] != "/t/a.tmpl" || raw.Proxies[0]["name"] != "haproxy:/srv/h.cfg" {
			t.Errorf("not sorted: %v %v", raw.Templates[0]["source"], raw.Proxies[0]["name"])
		}
		if raw.Templates[0]["last_swap"] != nil || raw.Proxies[0]["last_reload"] != nil {
			t.Errorf("zero times must be null")
		}
		if e, ok := raw.Templates[0]["held_emptied"].([]any); !ok || len(e) != 0 {
			t.Errorf("held_emptied must be [], got %#v", raw.Templates[0]["held_emptied"])
		}
	})

	t.Run("held render", func(t *testing.T) {
		s := good()
		s.Templates[0].Holds, s.Templates[0].HeldSince = 2, t0
		s.Templates[0].HeldBackendsBefore, s.Templates[0].HeldBackendsAfter = 4, 1
		s.Templates[0].HeldEmptied = []string{"svc_api", "svc_web"}
		tp := getJSON(t, s).Templates[1]
		if !tp.Held || tp.HeldSince == nil || !tp.HeldSince.Equal(t0) || tp.HeldBackendsBefore != 4 ||
			tp.HeldBackendsAfter != 1 || strings.Join(tp.HeldEmptied, ",") != "svc_api,svc_web" || tp.Holds != 2 {
			t.Errorf("hold not exposed: %+v", tp)
		}
	})
}

func keys(m map[string]any) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

// sample is one parsed exposition line.
type sample struct {
	name   string
	labels map[string]string
	value  string
}

var (
	sampleRe = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$`)
	labelRe  = regexp.MustCompile(`^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)`)
)

// parseExposition is a strict reader of the text format, enough to check
// what we write: HELP/TYPE before samples, escaped label values.
func parseExposition(t *testing.T, body string) []sample {
	t.Helper()
	if !strings.HasSuffix(body, "\n") {
		t.Fatalf("exposition must end with a line feed")
	}
	typed := map[string]bool{}
	var out []sample
	for _, line := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(f, " ")
			if typ != "counter" && typ != "gauge" {
				t.Errorf("bad type: %q", line)
			}
			if strings.HasSuffix(name, "_total") != (typ == "counter") {
				t.Errorf("counters and only counters end in _total: %q", line)
			}
			typed[name] = true
			continue
		}
		if strings.HasPrefix(line, "# HELP ") {
			continue
		}
		m := sampleRe.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a sample line: %q", line)
		}
		if !typed[m[1]] {
			t.Errorf("sample before its TYPE: %q", line)
		}
		s := sample{name: m[1], labels: map[string]string{}, value: m[4]}
		for rest := m[3]; rest != ""; {
			lm := labelRe.FindStringSubmatch(rest)
			if lm == nil {
				t.Fatalf("bad labels in %q at %q", line, rest)
			}
			s.labels[lm[1]] = unescape(lm[2])
			rest = rest[len(lm[0]):]
		}
		out = append(out, s)
	}
	return out
}

func unescape(v string) string {
	return strings.NewReplacer(`\\`, `\`, `\"`, `"`, `\n`, "\n").Replace(v)
}

func find(ss []sample, name string, labels map[string]string) (string, bool) {
next:
	for _, s := range ss {
		if s.name != name || len(s.labels) != len(labels) {
			continue
		}
		for k, v := range labels {
			if s.labels[k] != v {
				continue next
			}
		}
		return s.value, true
	}
	return "", false
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
			line: []string{
				`switchyard_renderer_renders_rejected_total{template="/srv/we\"ird\\dir\nx.tmpl",dest="C:\\srv\\a \"b\".conf"} 1`,
				`switchyard_renderer_reloads_total{proxy="nginx:/srv/we\"ird\\dir\nx.tmpl"} 4`,
			},
		},
		{
			name: "nothing configured: families without samples, globals",
			snap: func() Snapshot { return Snapshot{} },
			want: map[string]string{"switchyard_renderer_ready": "1", "switchyard_renderer_runner_rebuilds_total": "0"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(Handler(SourceFunc(tc.snap)))
			defer srv.Close()
			resp, err := http.Get(srv.URL + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body := string(b)
			samples := parseExposition(t, body)
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
				got, ok := find(samples, name, labels)
				if !ok {
					t.Errorf("no sample %s %v in\n%s", name, labels, body)
					continue
				}
				if got != want {
					t.Errorf("%s %v = %s, want %s", name, labels, got, want)
				}
			}
			for _, l := range tc.line {
				if !strings.Contains(body, l+"\n") {
					t.Errorf("line %s missing from\n%s", l, body)
				}
			}
			if n := len(samples); n != expectedSamples(tc.snap()) {
				t.Errorf("%d samples, want %d", n, expectedSamples(tc.snap()))
			}
		})
	}
}

func expectedSamples(s Snapshot) int {
	n := 0
	for _, m := range metrics {
		switch {
		case m.tmpl != nil:
			n += len(s.Templates)
		case m.proxy != nil:
			n += len(s.Proxies)
		default:
			n++
		}
	}
	return n
}

func TestHelpAndNames(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range metrics {
		if seen[m.name] {
			t.Errorf("duplicate metric %s", m.name)
		}
		seen[m.name] = true
		if strings.ContainsAny(m.help, "\n\\") {
			t.Errorf("%s: help needs escaping; keep it plain", m.name)
		}
	}
	if got := escapeHelp("a\\b\nc"); got != `a\\b\nc` {
		t.Errorf("escapeHelp = %q", got)
	}
}
