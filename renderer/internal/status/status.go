// Package status turns a snapshot of the renderer's state into HTTP
// responses: /healthz, /ready, /status (JSON) and /metrics (Prometheus,
// through client_golang and a registry of its own). It reads no state of
// its own: every request asks its Source for a fresh Snapshot. The latency
// histograms are the exception: they cannot be rebuilt from a snapshot, so
// Histograms keeps them and the parts that time things report into it.
package status

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/switchyard/switchyard/renderer/statusdoc"
)

// Snapshot is the renderer's state at one moment, as plain values.
type Snapshot struct {
	Templates []Template
	Proxies   []Proxy
	Runner    Runner
	// At is when the snapshot was taken (zero: unknown), the now of
	// Ready's time rules.
	At time.Time
}

// Template is one rendered destination.
type Template struct {
	Source, Dest string
	Proxy        string // proxy key ("nginx:/path"), "" = none
	Accepted     bool   // a render has been accepted (swapped or equal to the live file)
	Swaps        int64
	LastSwap     time.Time // zero: never swapped
	LastError    string    // last failure, with the proxy's output; "" after an accepted render
	// LastErrorKind says which step failed last: "validation" (the proxy
	// rejected the render), "write" (read, stage or swap of the files
	// failed: ENOSPC, EROFS, EACCES), "execute" (the template itself failed
	// before producing a config) or "rollback" (the render was swapped but
	// the reload did not take). "" after an accepted render.
	LastErrorKind string
	Rejected      int64 // renders that never went live (validation, or rolled back)
	WriteErrors   int64 // failed reads, stages and swaps of the files
	ExecErrors    int64 // template executions that failed
	// ParseError: the template file no longer parses (read again on
	// SIGHUP); the previous version keeps rendering. It stays until a
	// read of the templates succeeds, whatever renders meanwhile.
	ParseError string

	// Stale guard: Holds counts held renders so far; the rest describes
	// the render held now (HeldSince zero: none).
	Holds                                 int64
	HeldSince                             time.Time
	HeldBackendsBefore, HeldBackendsAfter int
	HeldEmptied                           []string
}

// Held reports whether the stale guard holds a render of t now.
func (t Template) Held() bool { return !t.HeldSince.IsZero() }

// Proxy is one reloaded proxy.
type Proxy struct {
	Name           string // proxy key, as in Template.Proxy
	Reloads        int64  // reloads that took
	ReloadFailures int64
	Rollbacks      int64
	// Membership changes applied through the proxy's runtime interface
	// instead of a reload; the attempts that failed; the reloads made
	// after such a failure.
	RuntimeApplies, RuntimeFailures, RuntimeFallbacks int64
	LastRuntimeApply                                  time.Time // zero: never
	LastRuntimeError                                  string    // "" when the last attempt applied
	LastReload                                        time.Time // zero: never reloaded
	LastError                                         string    // why the last reload did not take; "" when it took
	// ReloadPending: files changed that the proxy has not loaded yet (a
	// batch waiting for its debounce, or a proxy that did not answer).
	ReloadPending bool

	// Supervised proxies only: Up while our child runs; Deaths counts its
	// unplanned exits, Restarts the restarts after them.
	Supervised       bool
	Up               bool
	Deaths, Restarts int64
}

// Runner counts consul-template runner rebuilds: after it died, and after
// a Consul outage.
type Runner struct {
	Rebuilds, OutageRebuilds int64

	// Consul as the runner sees it: errors while it retries, the last one
	// (token redacted), and since when Consul has not answered (zero: it
	// answers).
	ConsulErrors    int64
	LastConsulError string
	ConsulDownSince time.Time

	// Consul answers but refuses the runner: 429 for too many connections
	// from our address (http_max_conns_per_client), or connections reset
	// while it does. Throttled counts such errors by reason (a Throttle*
	// constant); ThrottledSince is when the current episode began (zero:
	// none); MissingDeps is how many dependencies of the templates have no
	// data yet, as of the runner's last pass.
	Throttled      map[string]int64
	LastThrottle   string
	ThrottledSince time.Time
	MissingDeps    int
	// LastRefusal is when Consul last refused the runner (zero: never).
	LastRefusal time.Time
}

// Reasons Consul refuses the runner, for Runner.Throttled and the reason
// label of consul_throttled_total.
const (
	Throttle429       = "429"
	ThrottleConnReset = "conn_reset"
)

// throttleReasons always have a sample, so an alert sees 0, not nothing.
var throttleReasons = []string{Throttle429, ThrottleConnReset}

// Starved reports whether Consul's refusals keep a template from a
// complete render: throttled now, and dependencies still without data.
func (r Runner) Starved() bool { return !r.ThrottledSince.IsZero() && r.MissingDeps > 0 }

// RefusedFor is how long refusals may go on, every dependency in hand,
// before the renderer counts as blind: its refused watches (the services
// list among them, maybe) see no change, so the files no longer follow
// the catalog. Longer than the retry backoff's default cap (10s), so a
// refusal still going on is seen; short of a blocking query's wait.
const RefusedFor = 30 * time.Second

// Blind reports whether, at at, Consul has refused the runner for longer
// than RefusedFor and still does (a refusal within RefusedFor): a pass
// with every dependency in hand ends an episode, and a refused watch
// never makes one.
func (r Runner) Blind(at time.Time) bool {
	return !r.ThrottledSince.IsZero() && at.Sub(r.ThrottledSince) > RefusedFor && at.Sub(r.LastRefusal) < RefusedFor
}

// Source hands out snapshots; it is called once per request, from the
// HTTP server's goroutines, so it must be safe for concurrent use.
type Source interface {
	Snapshot() Snapshot
}

// SourceFunc adapts a function to Source.
type SourceFunc func() Snapshot

// Snapshot implements Source.
func (f SourceFunc) Snapshot() Snapshot { return f() }

// sorted returns a copy of s with templates and proxies in a stable order.
func (s Snapshot) sorted() Snapshot {
	s.Templates = slices.Clone(s.Templates)
	slices.SortFunc(s.Templates, func(a, b Template) int {
		return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.Dest, b.Dest))
	})
	s.Proxies = slices.Clone(s.Proxies)
	slices.SortFunc(s.Proxies, func(a, b Proxy) int { return cmp.Compare(a.Name, b.Name) })
	return s
}

// Ready reports whether every template has had a render accepted and the
// last reload of every proxy took; if not, reason says what is missing, on
// one line.
func (s Snapshot) Ready() (ok bool, reason string) {
	s = s.sorted()
	// Unlike an outage, a Consul that refuses us while data is missing
	// means no complete render is possible: the files silently stop
	// following the catalog. Checked first, since it is also why a
	// template may have no render accepted yet.
	if s.Runner.Starved() {
		return false, fmt.Sprintf("consul refuses the renderer (%s): %d dependencies without data, no complete render possible (see /status)",
			s.Runner.LastThrottle, s.Runner.MissingDeps)
	}
	if s.Runner.Blind(s.At) {
		return false, fmt.Sprintf("consul refuses the renderer's watches (%s) for %s: the files do not follow the catalog (see /status)",
			s.Runner.LastThrottle, s.At.Sub(s.Runner.ThrottledSince).Round(time.Second))
	}
	for _, t := range s.Templates {
		if !t.Accepted {
			if t.Rejected > 0 {
				return false, fmt.Sprintf("template %s -> %s: no render accepted yet (%d rejected, see /status)", t.Source, t.Dest, t.Rejected)
			}
			return false, fmt.Sprintf("template %s -> %s: no render accepted yet", t.Source, t.Dest)
		}
		// A rejected render leaves a validated config serving: still
		// ready. A write or execute failure means the file can no longer
		// follow Consul at all.
		if t.ParseError != "" {
			return false, fmt.Sprintf("template %s: does not parse; the previous version still renders (see /status)", t.Source)
		}
		if t.LastErrorKind == KindWrite || t.LastErrorKind == KindExecute {
			return false, fmt.Sprintf("template %s -> %s: %s failed (see /status)", t.Source, t.Dest, t.LastErrorKind)
		}
	}
	for _, p := range s.Proxies {
		if p.Supervised && !p.Up {
			return false, fmt.Sprintf("proxy %s: not running (%d deaths, see /status)", p.Name, p.Deaths)
		}
		if p.LastError != "" {
			return false, fmt.Sprintf("proxy %s: last reload did not take (see /status)", p.Name)
		}
	}
	// A Consul outage alone does not make the renderer unready: the proxy
	// serves the last validated config, and taking every proxy host out
	// of its load balancer during an outage would turn it into a total
	// one. /status and consul_up say Consul is down.
	return true, ""
}

// Kinds of template failure, for Template.LastErrorKind.
const (
	KindValidation = "validation"
	KindWrite      = "write"
	KindExecute    = "execute"
	KindRollback   = "rollback"
)

// Handler serves /healthz, /ready, /status and /metrics from src; /metrics
// also serves h's histograms (h may be nil) and the Go and process metrics.
func Handler(src Source, h *Histograms) http.Handler {
	mux := http.NewServeMux()
	// "GET" patterns answer HEAD too; other methods get 405.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ok, reason := src.Snapshot().Ready(); !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: "+oneLine(reason))
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(statusJSON(src.Snapshot()))
	})
	mux.Handle("GET /metrics", metricsHandler(src, h))
	return mux
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// The JSON document of /status is package statusdoc's.
type (
	statusDoc    = statusdoc.Doc
	templateJSON = statusdoc.Template
	proxyJSON    = statusdoc.Proxy
	runnerJSON   = statusdoc.Runner
)

func timeJSON(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func statusJSON(s Snapshot) statusDoc {
	s = s.sorted()
	ok, reason := s.Ready()
	doc := statusDoc{
		Ready: ok, Reason: reason,
		Templates: []templateJSON{}, Proxies: []proxyJSON{},
		Runner: runnerJSON{
			Rebuilds: s.Runner.Rebuilds, OutageRebuilds: s.Runner.OutageRebuilds,
			ConsulErrors: s.Runner.ConsulErrors, LastConsulError: s.Runner.LastConsulError,
			ConsulDownSince: timeJSON(s.Runner.ConsulDownSince),
			ConsulThrottled: throttledJSON(s.Runner.Throttled), LastConsulThrottle: s.Runner.LastThrottle,
			ConsulThrottledSince: timeJSON(s.Runner.ThrottledSince), MissingDependencies: s.Runner.MissingDeps,
		},
	}
	for _, t := range s.Templates {
		doc.Templates = append(doc.Templates, templateDoc(t))
	}
	for _, p := range s.Proxies {
		doc.Proxies = append(doc.Proxies, proxyJSON{
			Name: p.Name, Reloads: p.Reloads, ReloadFailures: p.ReloadFailures,
			Rollbacks: p.Rollbacks, LastReload: timeJSON(p.LastReload), LastReloadError: p.LastError,
			ReloadPending:  p.ReloadPending,
			RuntimeApplies: p.RuntimeApplies, RuntimeFailures: p.RuntimeFailures, RuntimeFallbacks: p.RuntimeFallbacks,
			LastRuntimeApply: timeJSON(p.LastRuntimeApply), LastRuntimeError: p.LastRuntimeError,
			Supervised: p.Supervised, Up: p.Up, Deaths: p.Deaths, Restarts: p.Restarts,
		})
	}
	return doc
}

// throttledJSON has every known reason, 0 or not, so the document keeps
// one shape.
func throttledJSON(m map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for _, r := range throttleReasons {
		out[r] = 0
	}
	for r, n := range m {
		out[r] = n
	}
	return out
}

func templateDoc(t Template) templateJSON {
	// [] rather than null, and only for the render held now.
	emptied := []string{}
	if t.Held() {
		emptied = append(emptied, t.HeldEmptied...)
	}
	return templateJSON{
		Source: t.Source, Dest: t.Dest, Proxy: t.Proxy,
		Accepted: t.Accepted, Swaps: t.Swaps, LastSwap: timeJSON(t.LastSwap),
		LastError: t.LastError, LastErrorKind: t.LastErrorKind, Rejected: t.Rejected,
		WriteErrors: t.WriteErrors, ExecErrors: t.ExecErrors, ParseError: t.ParseError,
		Held: t.Held(), HeldSince: timeJSON(t.HeldSince),
		HeldBackendsBefore: t.HeldBackendsBefore, HeldBackendsAfter: t.HeldBackendsAfter,
		HeldEmptied: emptied, Holds: t.Holds,
	}
}
