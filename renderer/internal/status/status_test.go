package status

import (
	"encoding/json"
	"net/http/httptest"
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
		{"write failure after an accepted render", func() Snapshot {
			s := good()
			s.Templates[0].LastError, s.Templates[0].LastErrorKind, s.Templates[0].WriteErrors = "rename: read-only file system", KindWrite, 1
			return s
		}, false, "template /t/b.tmpl -> /srv/b.conf: write failed (see /status)"},
		{"execute failure after an accepted render", func() Snapshot {
			s := good()
			s.Templates[1].LastError, s.Templates[1].LastErrorKind, s.Templates[1].ExecErrors = "template: a.tmpl:3: bad", KindExecute, 2
			return s
		}, false, "template /t/a.tmpl -> /srv/a.conf: execute failed (see /status)"},
		{"validation rejection after an accepted render", func() Snapshot {
			s := rejected()
			s.Templates[0].LastErrorKind = KindValidation
			return s
		}, true, ""},
		{"rollback after an accepted render, reload since took", func() Snapshot {
			s := rejected()
			s.Templates[0].LastErrorKind = KindRollback
			return s
		}, true, ""},
		{"supervised proxy not up", func() Snapshot {
			s := good()
			s.Proxies[0].Supervised, s.Proxies[0].Up, s.Proxies[0].Deaths = true, false, 2
			return s
		}, false, "proxy nginx:/srv/b.conf: not running (2 deaths, see /status)"},
		{"supervised proxy up", func() Snapshot {
			s := good()
			s.Proxies[0].Supervised, s.Proxies[0].Up, s.Proxies[0].Deaths, s.Proxies[0].Restarts = true, true, 1, 1
			return s
		}, true, ""},
		{"unsupervised proxy: Up means nothing", func() Snapshot {
			s := good()
			s.Proxies[0].Up = false
			return s
		}, true, ""},
		{"reload pending alone", func() Snapshot {
			s := good()
			s.Proxies[0].ReloadPending = true
			return s
		}, true, ""},
		{"Consul down alone", func() Snapshot {
			s := good()
			s.Runner.ConsulDownSince, s.Runner.ConsulErrors, s.Runner.LastConsulError = t0, 7, "connection refused"
			return s
		}, true, ""},
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
			Handler(SourceFunc(tc.snap), nil).ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
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
	Handler(SourceFunc(func() Snapshot { return s }), nil).ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
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
		Handler(SourceFunc(func() Snapshot { return s }), nil).ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
		var raw struct {
			Templates []map[string]any `json:"templates"`
			Proxies   []map[string]any `json:"proxies"`
			Runner    map[string]any   `json:"runner"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
			t.Fatal(err)
		}
		wantT := []string{"accepted", "dest", "exec_errors", "held", "held_backends_after", "held_backends_before", "held_emptied",
			"held_since", "holds", "last_error", "last_error_kind", "last_swap", "parse_error", "proxy", "rejected", "source", "swaps", "write_errors"}
		if got := keys(raw.Templates[0]); got != strings.Join(wantT, ",") {
			t.Errorf("template fields: %s", got)
		}
		wantP := []string{"deaths", "last_reload", "last_reload_error", "last_runtime_apply", "last_runtime_apply_error", "name",
			"reload_failures", "reload_pending", "reloads", "restarts", "rollbacks", "runtime_applies", "runtime_apply_failures",
			"runtime_fallbacks", "supervised", "up"}
		if got := keys(raw.Proxies[0]); got != strings.Join(wantP, ",") {
			t.Errorf("proxy fields: %s", got)
		}
		if got := keys(raw.Runner); got != "consul_down_since,consul_errors,consul_throttled,consul_throttled_since,last_consul_error,last_consul_throttle,missing_dependencies,outage_rebuilds,rebuilds" {
			t.Errorf("runner fields: %s", got)
		}
		if raw.Templates[0]["source"] != "/t/a.tmpl" || raw.Proxies[0]["name"] != "haproxy:/srv/h.cfg" {
			t.Errorf("not sorted: %v %v", raw.Templates[0]["source"], raw.Proxies[0]["name"])
		}
		if raw.Templates[0]["last_swap"] != nil || raw.Proxies[0]["last_reload"] != nil || raw.Runner["consul_down_since"] != nil {
			t.Errorf("zero times must be null")
		}
		if e, ok := raw.Templates[0]["held_emptied"].([]any); !ok || len(e) != 0 {
			t.Errorf("held_emptied must be [], got %#v", raw.Templates[0]["held_emptied"])
		}
	})

	t.Run("failure kinds, supervision and Consul", func(t *testing.T) {
		s := good()
		s.Templates[0].LastError, s.Templates[0].LastErrorKind = "write /srv/.b.conf.staged-1: no space left on device", KindWrite
		s.Templates[0].WriteErrors, s.Templates[0].ExecErrors = 3, 1
		s.Proxies[0].ReloadPending, s.Proxies[0].Supervised, s.Proxies[0].Up = true, true, true
		s.Proxies[0].Deaths, s.Proxies[0].Restarts = 2, 2
		s.Runner.ConsulErrors, s.Runner.LastConsulError, s.Runner.ConsulDownSince = 5, "dial tcp: connection refused", t0.In(time.FixedZone("X", 3600))
		doc := getJSON(t, s)
		tp, p, r := doc.Templates[1], doc.Proxies[0], doc.Runner
		if tp.LastErrorKind != "write" || tp.WriteErrors != 3 || tp.ExecErrors != 1 {
			t.Errorf("template failure not exposed: %+v", tp)
		}
		if !p.ReloadPending || !p.Supervised || !p.Up || p.Deaths != 2 || p.Restarts != 2 {
			t.Errorf("proxy supervision not exposed: %+v", p)
		}
		if r.ConsulErrors != 5 || r.LastConsulError != "dial tcp: connection refused" || r.ConsulDownSince == nil || !r.ConsulDownSince.Equal(t0) {
			t.Errorf("runner Consul state not exposed: %+v", r)
		}
		if doc.Ready || doc.Reason != "template /t/b.tmpl -> /srv/b.conf: write failed (see /status)" {
			t.Errorf("ready %v %q", doc.Ready, doc.Reason)
		}
		rec := httptest.NewRecorder()
		Handler(SourceFunc(func() Snapshot { return s }), nil).ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
		if !strings.Contains(rec.Body.String(), `"consul_down_since": "2025-03-04T05:06:07.25Z"`) {
			t.Errorf("consul_down_since must be RFC 3339 in UTC:\n%s", rec.Body)
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
