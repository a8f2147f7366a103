// Package status turns a snapshot of the renderer's state into HTTP
// responses: /healthz, /ready, /status (JSON) and /metrics (Prometheus text
// format, written by hand so the renderer needs no metrics library). It
// reads no state of its own: every request asks its Source for a fresh
// Snapshot.
package status

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Snapshot is the renderer's state at one moment, as plain values.
type Snapshot struct {
	Templates []Template
	Proxies   []Proxy
	Runner    Runner
}

// Template is one rendered destination.
type Template struct {
	Source, Dest string
	Proxy        string // proxy key ("nginx:/path"), "" = none
	Accepted     bool   // a render has been accepted (swapped or equal to the live file)
	Swaps        int64
	LastSwap     time.Time // zero: never swapped
	LastError    string    // last rejection, with the proxy's output; "" after an accepted render
	Rejected     int64

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
	LastReload     time.Time // zero: never reloaded
	LastError      string    // why the last reload did not take; "" when it took
}

// Runner counts consul-template runner rebuilds: after it died, and after
// a Consul outage.
type Runner struct {
	Rebuilds, OutageRebuilds int64
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
	for _, t := range s.Templates {
		if !t.Accepted {
			if t.Rejected > 0 {
				return false, fmt.Sprintf("template %s -> %s: no render accepted yet (%d rejected, see /status)", t.Source, t.Dest, t.Rejected)
			}
			return false, fmt.Sprintf("template %s -> %s: no render accepted yet", t.Source, t.Dest)
		}
	}
	for _, p := range s.Proxies {
		if p.LastError != "" {
			return false, fmt.Sprintf("proxy %s: last reload did not take (see /status)", p.Name)
		}
	}
	return true, ""
}

// Handler serves /healthz, /ready, /status and /metrics from src.
func Handler(src Source) http.Handler {
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
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		writeMetrics(w, src.Snapshot())
	})
	return mux
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// The JSON document of /status. Field names are an interface: add, never
// rename. Times are RFC 3339 in UTC, null when it never happened.
type statusDoc struct {
	Ready     bool           `json:"ready"`
	Reason    string         `json:"reason"`
	Templates []templateJSON `json:"templates"`
	Proxies   []proxyJSON    `json:"proxies"`
	Runner    runnerJSON     `json:"runner"`
}

type templateJSON struct {
	Source             string     `json:"source"`
	Dest               string     `json:"dest"`
	Proxy              string     `json:"proxy"`
	Accepted           bool       `json:"accepted"`
	Swaps              int64      `json:"swaps"`
	LastSwap           *time.Time `json:"last_swap"`
	LastError          string     `json:"last_error"`
	Rejected           int64      `json:"rejected"`
	Held               bool       `json:"held"`
	HeldSince          *time.Time `json:"held_since"`
	HeldBackendsBefore int        `json:"held_backends_before"`
	HeldBackendsAfter  int        `json:"held_backends_after"`
	HeldEmptied        []string   `json:"held_emptied"`
	Holds              int64      `json:"holds"`
}

type proxyJSON struct {
	Name            string     `json:"name"`
	Reloads         int64      `json:"reloads"`
	ReloadFailures  int64      `json:"reload_failures"`
	Rollbacks       int64      `json:"rollbacks"`
	LastReload      *time.Time `json:"last_reload"`
	LastReloadError string     `json:"last_reload_error"`
}

type runnerJSON struct {
	Rebuilds       int64 `json:"rebuilds"`
	OutageRebuilds int64 `json:"outage_rebuilds"`
}

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
		Runner: runnerJSON{Rebuilds: s.Runner.Rebuilds, OutageRebuilds: s.Runner.OutageRebuilds},
	}
	for _, t := range s.Templates {
		emptied := []string{}
		if t.Held() {
			emptied = append(emptied, t.HeldEmptied...)
		}
		doc.Templates = append(doc.Templates, templateJSON{
			Source: t.Source, Dest: t.Dest, Proxy: t.Proxy,
			Accepted: t.Accepted, Swaps: t.Swaps, LastSwap: timeJSON(t.LastSwap),
			LastError: t.LastError, Rejected: t.Rejected,
			Held: t.Held(), HeldSince: timeJSON(t.HeldSince),
			HeldBackendsBefore: t.HeldBackendsBefore, HeldBackendsAfter: t.HeldBackendsAfter,
			HeldEmptied: emptied, Holds: t.Holds,
		})
	}
	for _, p := range s.Proxies {
		doc.Proxies = append(doc.Proxies, proxyJSON{
			Name: p.Name, Reloads: p.Reloads, ReloadFailures: p.ReloadFailures,
			Rollbacks: p.Rollbacks, LastReload: timeJSON(p.LastReload), LastReloadError: p.LastError,
		})
	}
	return doc
}

// metric is one family of the exposition; families are written in this
// order, samples in the snapshot's sorted order.
type metric struct {
	name, typ, help string
	tmpl            func(Template) float64 // per template, or
	proxy           func(Proxy) float64    // per proxy, or
	global          func(Snapshot) float64 // one sample
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

const prefix = "switchyard_renderer_"

var metrics = []metric{
	{name: "ready", typ: "gauge", help: "1 when every template had a render accepted and the last reload of every proxy took.",
		global: func(s Snapshot) float64 { ok, _ := s.Ready(); return b2f(ok) }},
	{name: "template_accepted", typ: "gauge", help: "1 once a render of the template has been accepted.",
		tmpl: func(t Template) float64 { return b2f(t.Accepted) }},
	{name: "template_error", typ: "gauge", help: "1 while the template's last render was rejected.",
		tmpl: func(t Template) float64 { return b2f(t.LastError != "") }},
	{name: "swaps_total", typ: "counter", help: "Rendered configs swapped into the live file.",
		tmpl: func(t Template) float64 { return float64(t.Swaps) }},
	{name: "last_swap_timestamp_seconds", typ: "gauge", help: "Unix time of the last swap of the live file (0: never).",
		tmpl: func(t Template) float64 { return unix(t.LastSwap) }},
	{name: "renders_rejected_total", typ: "counter", help: "Rendered configs rejected by validation (or rolled back); the live file was not changed.",
		tmpl: func(t Template) float64 { return float64(t.Rejected) }},
	{name: "stale_guard_held", typ: "gauge", help: "1 while the stale guard holds a render of the template.",
		tmpl: func(t Template) float64 { return b2f(t.Held()) }},
	{name: "stale_guard_holds_total", typ: "counter", help: "Renders held by the stale guard.",
		tmpl: func(t Template) float64 { return float64(t.Holds) }},
	{name: "reloads_total", typ: "counter", help: "Proxy reloads that took (verified).",
		proxy: func(p Proxy) float64 { return float64(p.Reloads) }},
	{name: "reload_failures_total", typ: "counter", help: "Proxy reloads that did not take.",
		proxy: func(p Proxy) float64 { return float64(p.ReloadFailures) }},
	{name: "rollbacks_total", typ: "counter", help: "Failed reloads after which the previous good config was restored.",
		proxy: func(p Proxy) float64 { return float64(p.Rollbacks) }},
	{name: "last_reload_timestamp_seconds", typ: "gauge", help: "Unix time of the last reload attempt (0: never).",
		proxy: func(p Proxy) float64 { return unix(p.LastReload) }},
	{name: "last_reload_success", typ: "gauge", help: "1 unless the last reload of the proxy did not take.",
		proxy: func(p Proxy) float64 { return b2f(p.LastError == "") }},
	{name: "runner_rebuilds_total", typ: "counter", help: "consul-template runners rebuilt after they died.",
		global: func(s Snapshot) float64 { return float64(s.Runner.Rebuilds) }},
	{name: "runner_outage_rebuilds_total", typ: "counter", help: "consul-template runners rebuilt after a Consul outage.",
		global: func(s Snapshot) float64 { return float64(s.Runner.OutageRebuilds) }},
}

// writeMetrics writes s in the Prometheus text exposition format 0.0.4.
func writeMetrics(w io.Writer, s Snapshot) {
	s = s.sorted()
	var b strings.Builder
	for _, m := range metrics {
		name := prefix + m.name
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(m.help), name, m.typ)
		switch {
		case m.tmpl != nil:
			for _, t := range s.Templates {
				fmt.Fprintf(&b, "%s{template=\"%s\",dest=\"%s\"} %s\n", name,
					escapeLabel(t.Source), escapeLabel(t.Dest), formatValue(m.tmpl(t)))
			}
		case m.proxy != nil:
			for _, p := range s.Proxies {
				fmt.Fprintf(&b, "%s{proxy=\"%s\"} %s\n", name, escapeLabel(p.Name), formatValue(m.proxy(p)))
			}
		default:
			fmt.Fprintf(&b, "%s %s\n", name, formatValue(m.global(s)))
		}
	}
	_, _ = io.WriteString(w, b.String())
}

// escapeLabel escapes a label value: backslash, double quote and line feed
// are the only characters the format requires escaping.
var escapeLabel = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace

// escapeHelp escapes HELP text: backslash and line feed.
var escapeHelp = strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace

// formatValue writes integers without an exponent and times with their
// fraction (1712345678.25), both valid Go/Prometheus floats.
func formatValue(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
