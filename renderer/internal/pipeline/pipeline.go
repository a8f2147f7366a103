// Package pipeline is the write path of every rendered template. It is
// consul-template's RendererFunc: compare the rendered bytes with the live
// file, stage them next to it, validate the staged file with the proxy,
// then swap atomically and keep the last good generations. A rejected
// config never touches the live file and never stops the daemon.
package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/consul-template/renderer"
)

// Validator checks a staged config file. proxy.Nginx and friends implement
// it; nil means "no validation" (proxy none).
type Validator interface {
	Validate(ctx context.Context, path string) error
}

// Target is one rendered destination.
type Target struct {
	Template  string    // source path, for logs
	Dest      string    // live file
	Proxy     string    // key of the proxy that loads Dest ("" = none)
	Validator Validator // nil = accept anything
	Keep      int       // good generations kept for rollback (0 = DefaultKeep)
	// Backends measures a config for the stale guard: servers per
	// upstream/backend block (NginxUpstreams, HAProxyBackends). nil turns
	// the guard off for this target.
	Backends func([]byte) Counts
}

// DefaultKeep is how many good generations are kept per destination.
const DefaultKeep = 5

// Status is what the pipeline knows about one destination.
type Status struct {
	Accepted  bool      // a render of this template has been accepted (swapped or equal)
	Swaps     int       // times the live file changed
	LastSwap  time.Time // last time the live file changed
	LastError error     // last rejection, nil after an accepted render
	Rejected  int       // rejections so far
	Held      int       // renders held by the stale guard so far
	HeldSince time.Time // zero unless a render is held now
	// The render held now, measured (zero and nil when none is held):
	// servers in the live file and in the held render, and the blocks it
	// empties or drops.
	HeldBackendsBefore, HeldBackendsAfter int
	HeldEmptied                           []string
}

// Pipeline holds the targets and their state. The runner calls Render from
// its own goroutine; the supervisor reads Changed and Status from another,
// hence the mutex.
type Pipeline struct {
	log     *slog.Logger
	timeout time.Duration
	plan    io.Writer // non-nil: plan mode, validate and print, change nothing

	// ctx bounds validation commands. RendererFunc has no context parameter,
	// so the pipeline carries the daemon's.
	ctx context.Context

	mu       sync.Mutex
	targets  map[string]*Target
	status   map[string]*Status
	rejected map[string][32]byte // dest -> hash of the last rejected bytes
	changed  map[string]bool     // proxies whose files changed since TakeChanged
	notify   chan struct{}

	// Stale guard.
	maxRemoval float64
	holdDown   time.Duration
	leader     func(context.Context) error
	held       map[string]*held

	// wmu serialises writes of the live files: the runner's renders and
	// the supervisor's ApplyHeld.
	wmu sync.Mutex
}

type held struct {
	contents []byte
	sum      [32]byte
	perms    os.FileMode
	since    time.Time
	retryAt  time.Time
}

// Options configures a Pipeline.
type Options struct {
	Log     *slog.Logger
	Timeout time.Duration // validation timeout
	Plan    io.Writer     // plan mode output

	// MaxRemoval (0..1) and HoldDown configure the stale guard: a render
	// that removes more than MaxRemoval of a target's backends, or empties
	// (or drops) a block that had backends, is held for HoldDown and
	// applied only if it is still the latest render then and Leader
	// reports a Consul leader. 0 = off.
	MaxRemoval float64
	HoldDown   time.Duration
	Leader     func(context.Context) error
}

// New returns a pipeline for targets. ctx bounds every validation command.
func New(ctx context.Context, opts Options, targets []Target) *Pipeline {
	p := &Pipeline{
		log:      opts.Log,
		timeout:  opts.Timeout,
		plan:     opts.Plan,
		ctx:      ctx,
		targets:  map[string]*Target{},
		status:   map[string]*Status{},
		rejected: map[string][32]byte{},
		changed:  map[string]bool{},
		notify:   make(chan struct{}, 1),

		maxRemoval: opts.MaxRemoval,
		holdDown:   opts.HoldDown,
		leader:     opts.Leader,
		held:       map[string]*held{},
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	for _, t := range targets {
		t := t
		if t.Keep <= 0 {
			t.Keep = DefaultKeep
		}
		p.targets[filepath.Clean(t.Dest)] = &t
		p.status[filepath.Clean(t.Dest)] = &Status{}
	}
	if p.plan == nil {
		// Plan mode changes nothing, not even our own leftovers.
		for _, d := range sortedKeys(p.targets) {
			p.sweep(d)
		}
	}
	return p
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Notify receives a value whenever the pipeline accepted or rejected a
// render; the supervisor then reads TakeChanged and Complete.
func (p *Pipeline) Notify() <-chan struct{} { return p.notify }

// TakeChanged returns, sorted, the proxies whose files changed since the
// last call, and forgets them.
func (p *Pipeline) TakeChanged() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.changed))
	for k := range p.changed {
		out = append(out, k)
	}
	clear(p.changed)
	sort.Strings(out)
	return out
}

// Complete reports whether every template has had a render accepted: only
// then may a proxy be started or reloaded.
func (p *Pipeline) Complete() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.status {
		if !s.Accepted {
			return false
		}
	}
	return true
}

// Attempted reports whether every template has been rendered at least once,
// accepted or rejected (used by `renderer once`).
func (p *Pipeline) Attempted() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.status {
		if !s.Accepted && s.Rejected == 0 {
			return false
		}
	}
	return true
}

// Status returns a copy of the state of every destination.
func (p *Pipeline) Status() map[string]Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]Status, len(p.status))
	for k, v := range p.status {
		s := *v
		s.HeldEmptied = slices.Clone(v.HeldEmptied)
		out[k] = s
	}
	return out
}

// Destinations returns the live files that proxy loads, sorted.
func (p *Pipeline) Destinations(proxy string) []string {
	var out []string
	for d, t := range p.targets {
		if t.Proxy == proxy {
			out = append(out, d)
		}
	}
	sort.Strings(out)
	return out
}

func (p *Pipeline) signal() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// Render implements consul-template's renderer.Renderer.
//
// DidRender is true only when the live file changed: consul-template then
// counts a render, and we count a reload. Equal bytes are a no-op, or every
// catalog change would become a reload.
func (p *Pipeline) Render(in *renderer.RenderInput) (*renderer.RenderResult, error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	return p.render(in, time.Now())
}

func (p *Pipeline) render(in *renderer.RenderInput, now time.Time) (*renderer.RenderResult, error) {
	dest := filepath.Clean(in.Path)
	t, ok := p.targets[dest]
	if !ok {
		return nil, fmt.Errorf("render %s: destination is not configured", in.Path)
	}
	log := p.log.With("template", t.Template, "dest", t.Dest)

	live, err := os.ReadFile(dest)
	exists := err == nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read live %s: %w", dest, err)
	}
	if exists && bytes.Equal(live, in.Contents) {
		p.unhold(dest)
		p.accept(dest, false)
		return &renderer.RenderResult{WouldRender: true, Contents: live}, nil
	}

	sum := sha256.Sum256(in.Contents)
	p.mu.Lock()
	lastBad, wasBad := p.rejected[dest]
	p.mu.Unlock()
	if wasBad && lastBad == sum && p.plan == nil {
		// Same bytes as the last rejected render (a runner rebuild or an
		// unrelated data change): do not run the validator again.
		err := p.Status()[dest].LastError
		return nil, fmt.Errorf("template %s -> %s: unchanged since rejected: %w", t.Template, dest, err)
	}

	if in.Dry {
		fmt.Fprintf(in.DryStream, "> %s\n%s", dest, in.Contents)
		return &renderer.RenderResult{WouldRender: true, Contents: in.Contents}, nil
	}

	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return nil, fmt.Errorf("template %s: create dir of %s: %w", t.Template, dest, err)
	}
	staged, release, err := stage(dest, in.Contents, in.Perms)
	if err != nil {
		return nil, fmt.Errorf("template %s: stage %s: %w", t.Template, dest, err)
	}
	defer release()
	defer os.Remove(staged) // no-op after a successful rename; runs before release

	start := time.Now()
	if err := p.validate(t, staged); err != nil {
		p.reject(dest, sum, err)
		log.Error("rendered config rejected; live file untouched", "proxy", t.Proxy, "err", err)
		return nil, fmt.Errorf("template %s -> %s: %w", t.Template, dest, err)
	}
	if exists && p.plan == nil && t.Backends != nil && p.maxRemoval > 0 {
		if hold := p.guard(t, live, in, sum, now); hold {
			return &renderer.RenderResult{WouldRender: true, Contents: live}, nil
		}
	}
	if p.plan != nil {
		fmt.Fprintf(p.plan, "--- %s (live)\n+++ %s (rendered, valid)\n", dest, dest)
		writeDiff(p.plan, live, in.Contents)
		p.accept(dest, false)
		return &renderer.RenderResult{WouldRender: true, Contents: in.Contents}, nil
	}

	if err := p.swap(t, staged, exists); err != nil {
		return nil, fmt.Errorf("template %s: swap %s: %w", t.Template, dest, err)
	}
	log.Info("config swapped", "proxy", t.Proxy, "bytes", len(in.Contents), "validated_in", time.Since(start).Round(time.Millisecond))
	p.accept(dest, true)
	return &renderer.RenderResult{DidRender: true, WouldRender: true, Contents: in.Contents}, nil
}

// guard is the stale guard: it reports true when the render must be held
// (the live file stays). Consul answering "no instances" during a leader
// election or an agent restart is the most reported outage of
// consul-template; a config that suddenly loses most backends, or all
// backends of one upstream, waits HoldDown and is applied only if Consul
// still says so then. The per-upstream rule matters because Consul comes
// back service by service: a render can keep most servers of the file
// while one service has none yet.
func (p *Pipeline) guard(t *Target, live []byte, in *renderer.RenderInput, sum [32]byte, now time.Time) bool {
	dest := filepath.Clean(t.Dest)
	before, after := t.Backends(live), t.Backends(in.Contents)
	hold, emptied := suspicious(before, after, p.maxRemoval)
	if !hold {
		p.unhold(dest)
		return false
	}
	log := p.log.With("template", t.Template, "dest", t.Dest, "proxy", t.Proxy,
		"backends_before", before.Total(), "backends_after", after.Total(), "emptied", emptied)
	p.mu.Lock()
	st := p.status[dest]
	st.HeldBackendsBefore, st.HeldBackendsAfter, st.HeldEmptied = before.Total(), after.Total(), emptied
	h := p.held[dest]
	if h != nil && h.sum != sum {
		// A newer suspicious render replaces the held one, but the hold
		// keeps its start: a stream of changes must not hold forever.
		h.contents, h.sum, h.perms = in.Contents, sum, in.Perms
	}
	if h == nil {
		h = &held{contents: in.Contents, sum: sum, perms: in.Perms, since: now}
		p.held[dest] = h
		st.Held++
		st.HeldSince = now
		st.Accepted = true // the live file is a config that served: proxies may start on it
		p.mu.Unlock()
		log.Warn("stale guard: render removes too many backends; holding it", "hold_down", p.holdDown)
		p.signal()
		return true
	}
	p.mu.Unlock()
	if now.Sub(h.since) < p.holdDown {
		return true
	}
	if p.leader != nil {
		if err := p.leader(p.ctx); err != nil {
			p.mu.Lock()
			h.retryAt = now.Add(5 * time.Second)
			p.mu.Unlock()
			log.Warn("stale guard: Consul has no leader; still holding", "err", err)
			return true
		}
	}
	log.Warn("stale guard: hold-down passed and Consul still says so; applying", "held_for", now.Sub(h.since).Round(time.Millisecond))
	p.unhold(dest)
	return false
}

func (p *Pipeline) unhold(dest string) {
	p.mu.Lock()
	delete(p.held, dest)
	st := p.status[dest]
	st.HeldSince = time.Time{}
	st.HeldBackendsBefore, st.HeldBackendsAfter, st.HeldEmptied = 0, 0, nil
	p.mu.Unlock()
}

// NextHold returns when ApplyHeld should run next, if a render is held.
func (p *Pipeline) NextHold() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var next time.Time
	for _, h := range p.held {
		at := h.since.Add(p.holdDown)
		if h.retryAt.After(at) {
			at = h.retryAt
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next, !next.IsZero()
}

// ApplyHeld applies every held render whose hold-down has passed, if it is
// still the latest render of its template (a newer render replaces or
// clears the hold) and Consul has a leader.
func (p *Pipeline) ApplyHeld() {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	now := time.Now()
	p.mu.Lock()
	due := map[string]*held{}
	for d, h := range p.held {
		if now.Sub(h.since) >= p.holdDown && !now.Before(h.retryAt) {
			due[d] = h
		}
	}
	p.mu.Unlock()
	for d, h := range due {
		if _, err := p.render(&renderer.RenderInput{Path: d, Contents: h.contents, Perms: h.perms}, now); err != nil {
			p.log.Error("apply held render", "dest", d, "err", err)
		}
	}
}

func (p *Pipeline) validate(t *Target, staged string) error {
	if t.Validator == nil {
		return nil
	}
	ctx := p.ctx
	if p.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	}
	return t.Validator.Validate(ctx, staged)
}

func (p *Pipeline) accept(dest string, swapped bool) {
	p.mu.Lock()
	s := p.status[dest]
	first := !s.Accepted
	s.Accepted = true
	s.LastError = nil
	delete(p.rejected, dest)
	if swapped {
		s.Swaps++
		s.LastSwap = time.Now()
		if t := p.targets[dest]; t.Proxy != "" {
			p.changed[t.Proxy] = true
		}
	}
	p.mu.Unlock()
	if swapped || first {
		p.signal()
	}
}

func (p *Pipeline) reject(dest string, sum [32]byte, err error) {
	p.mu.Lock()
	s := p.status[dest]
	s.LastError = err
	s.Rejected++
	p.rejected[dest] = sum
	p.mu.Unlock()
	p.signal()
}

// Rollback puts the previous good generation of every file of proxy back in
// place after a reload did not take, and marks the current bytes rejected so
// the same render is not retried until Consul changes. It returns the files
// it restored.
func (p *Pipeline) Rollback(proxy string, cause error) ([]string, error) {
	var restored []string
	var errs []error
	for _, dest := range p.Destinations(proxy) {
		t := p.targets[dest]
		cur, err := os.ReadFile(dest)
		if err != nil {
			errs = append(errs, fmt.Errorf("rollback %s: %w", dest, err))
			continue
		}
		ok, err := restorePrevious(t)
		if err != nil {
			errs = append(errs, fmt.Errorf("rollback %s: %w", dest, err))
			continue
		}
		if ok {
			restored = append(restored, dest)
			p.reject(dest, sha256.Sum256(cur), cause)
			p.log.Warn("rolled back to the previous good generation", "template", t.Template, "dest", dest, "proxy", proxy)
		}
	}
	return restored, errors.Join(errs...)
}
