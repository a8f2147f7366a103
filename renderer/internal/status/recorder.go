package status

import (
	"maps"
	"slices"
	"sync"
	"time"
)

// Recorder is where every part of the renderer reports what happened: the
// pipeline its renders, the supervisor its reloads, restarts and Consul
// errors. It keeps plain values under one mutex and hands out Snapshots,
// so /status, /ready and /metrics read one consistent state and no part
// needs to know who reads it. All methods are safe on a nil *Recorder
// (they do nothing), so a part tested alone needs none.
type Recorder struct {
	redact func(string) string

	mu        sync.Mutex
	templates map[string]*Template // by destination
	proxies   map[string]*Proxy
	runner    Runner
}

// NewRecorder returns an empty recorder. redact is applied to every error
// text it keeps (nil: kept as is), so a secret in an error never reaches
// /status.
func NewRecorder(redact func(string) string) *Recorder {
	if redact == nil {
		redact = func(s string) string { return s }
	}
	return &Recorder{redact: redact, templates: map[string]*Template{}, proxies: map[string]*Proxy{}}
}

func (r *Recorder) do(fn func()) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fn()
}

func (r *Recorder) errText(err error) string {
	if r == nil || err == nil {
		return ""
	}
	return r.redact(err.Error())
}

// AddTemplate declares a rendered destination.
func (r *Recorder) AddTemplate(source, dest, proxy string) {
	r.do(func() { r.templates[dest] = &Template{Source: source, Dest: dest, Proxy: proxy} })
}

// AddProxy declares a proxy; supervised proxies report Up.
func (r *Recorder) AddProxy(name string, supervised bool) {
	r.do(func() { r.proxies[name] = &Proxy{Name: name, Supervised: supervised} })
}

func (r *Recorder) template(dest string, fn func(*Template)) {
	r.do(func() {
		if t := r.templates[dest]; t != nil {
			fn(t)
		}
	})
}

func (r *Recorder) proxy(name string, fn func(*Proxy)) {
	r.do(func() {
		if p := r.proxies[name]; p != nil {
			fn(p)
		}
	})
}

// Accepted records a render of dest that the live file now equals
// (swapped: the live file changed at at).
func (r *Recorder) Accepted(dest string, swapped bool, at time.Time) {
	r.template(dest, func(t *Template) {
		t.Accepted, t.LastError, t.LastErrorKind = true, "", ""
		if swapped {
			t.Swaps++
			t.LastSwap = at
		}
	})
}

// Failed records a render of dest that did not go live, and why (kind is
// one of the Kind constants).
func (r *Recorder) Failed(dest, kind string, err error) {
	text := r.errText(err)
	r.template(dest, func(t *Template) {
		t.LastError, t.LastErrorKind = text, kind
		switch kind {
		case KindWrite:
			t.WriteErrors++
		case KindExecute:
			t.ExecErrors++
		default:
			t.Rejected++
		}
	})
}

// ParseFailed records that the template of dest, read again, does not
// parse (err), or that it parses again (nil).
func (r *Recorder) ParseFailed(dest string, err error) {
	text := r.errText(err)
	r.template(dest, func(t *Template) {
		t.ParseError = text
		if err != nil {
			t.ExecErrors++
			t.LastError, t.LastErrorKind = text, KindExecute
		}
	})
}

// HoldInfo describes a render the stale guard holds.
type HoldInfo struct {
	Since         time.Time
	Before, After int
	Emptied       []string
}

// Held records that a render of dest is held now (fresh: a new hold).
// A held file still serves a config that was accepted.
func (r *Recorder) Held(dest string, h HoldInfo, fresh bool) {
	r.template(dest, func(t *Template) {
		if fresh {
			t.Holds++
		}
		t.Accepted = true
		t.HeldSince, t.HeldBackendsBefore, t.HeldBackendsAfter = h.Since, h.Before, h.After
		t.HeldEmptied = slices.Clone(h.Emptied)
	})
}

// Unheld records that no render of dest is held any more.
func (r *Recorder) Unheld(dest string) {
	r.template(dest, func(t *Template) {
		t.HeldSince, t.HeldBackendsBefore, t.HeldBackendsAfter, t.HeldEmptied = time.Time{}, 0, 0, nil
	})
}

// Reloaded records a reload of name attempted at at; err nil: it took.
func (r *Recorder) Reloaded(name string, at time.Time, err error) {
	text := r.errText(err)
	r.proxy(name, func(p *Proxy) {
		p.LastReload, p.LastError, p.ReloadPending = at, text, false
		if err == nil {
			p.Reloads++
		} else {
			p.ReloadFailures++
		}
	})
}

// RuntimeApplied records a runtime apply of a membership change to name
// attempted at at; err nil: it took, no reload was needed. A membership
// change applied at runtime also means the proxy serves the live files:
// nothing is pending.
func (r *Recorder) RuntimeApplied(name string, at time.Time, err error) {
	text := r.errText(err)
	r.proxy(name, func(p *Proxy) {
		p.LastRuntimeApply, p.LastRuntimeError = at, text
		if err == nil {
			p.RuntimeApplies++
			p.ReloadPending = false
		} else {
			p.RuntimeFailures++
		}
	})
}

// FellBack records a reload of name made because a runtime apply failed.
func (r *Recorder) FellBack(name string) { r.proxy(name, func(p *Proxy) { p.RuntimeFallbacks++ }) }

// RolledBack records that the last verified files of name were restored.
func (r *Recorder) RolledBack(name string) { r.proxy(name, func(p *Proxy) { p.Rollbacks++ }) }

// ReloadPending records whether name has files it has not loaded yet.
func (r *Recorder) ReloadPending(name string, pending bool) {
	r.proxy(name, func(p *Proxy) { p.ReloadPending = pending })
}

// ProxyUp records that a supervised proxy started and serves the live files.
func (r *Recorder) ProxyUp(name string, restart bool) {
	r.proxy(name, func(p *Proxy) {
		p.Up, p.ReloadPending, p.LastError = true, false, ""
		if restart {
			p.Restarts++
		}
	})
}

// ProxyDied records an exit of a supervised proxy that we did not ask for.
func (r *Recorder) ProxyDied(name string, err error) {
	text := r.errText(err)
	r.proxy(name, func(p *Proxy) {
		p.Up = false
		p.Deaths++
		if text != "" {
			p.LastError = text
		}
	})
}

// RunnerRebuilt counts a consul-template runner rebuilt after it died
// (outage false) or after a Consul outage.
func (r *Recorder) RunnerRebuilt(outage bool) {
	r.do(func() {
		if outage {
			r.runner.OutageRebuilds++
		} else {
			r.runner.Rebuilds++
		}
	})
}

// ConsulError records an error the runner met talking to Consul.
func (r *Recorder) ConsulError(err error, at time.Time) {
	text := r.errText(err)
	r.do(func() {
		r.runner.ConsulErrors++
		r.runner.LastConsulError = text
		if r.runner.ConsulDownSince.IsZero() {
			r.runner.ConsulDownSince = at
		}
	})
}

// ConsulThrottled records that Consul refused the runner (reason is a
// Throttle* constant) at at. Consul answers, so this is not an outage:
// ConsulDownSince is left alone.
func (r *Recorder) ConsulThrottled(reason string, err error, at time.Time) {
	text := r.errText(err)
	r.do(func() {
		if r.runner.Throttled == nil {
			r.runner.Throttled = map[string]int64{}
		}
		r.runner.Throttled[reason]++
		r.runner.LastThrottle = reason + ": " + text
		r.runner.LastRefusal = at
		if r.runner.ThrottledSince.IsZero() {
			r.runner.ThrottledSince = at
		}
	})
}

// ThrottleOver records that the runner is no longer refused: a complete
// pass, or no refusal for a while.
func (r *Recorder) ThrottleOver() {
	r.do(func() { r.runner.ThrottledSince = time.Time{} })
}

// MissingDeps records how many dependencies of the templates had no data
// at the runner's last look.
func (r *Recorder) MissingDeps(n int) {
	r.do(func() { r.runner.MissingDeps = n })
}

// Redact applies the recorder's redaction to s, for text that is logged
// rather than kept (a Consul error may carry the token in its URL).
func (r *Recorder) Redact(s string) string {
	if r == nil {
		return s
	}
	return r.redact(s)
}

// ConsulAnswers records that Consul answered (a pass of the runner, a
// probe): the outage, if any, is over.
func (r *Recorder) ConsulAnswers() {
	r.do(func() { r.runner.ConsulDownSince = time.Time{} })
}

// Snapshot implements Source.
func (r *Recorder) Snapshot() Snapshot {
	var s Snapshot
	r.do(func() {
		for _, t := range r.templates {
			c := *t
			c.HeldEmptied = slices.Clone(t.HeldEmptied)
			s.Templates = append(s.Templates, c)
		}
		for _, p := range r.proxies {
			s.Proxies = append(s.Proxies, *p)
		}
		s.Runner = r.runner
		s.Runner.Throttled = maps.Clone(r.runner.Throttled)
	})
	s.At = time.Now()
	return s.sorted()
}
