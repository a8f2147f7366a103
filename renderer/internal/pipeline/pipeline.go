// Package pipeline is the write path of every rendered template. It is
// consul-template's RendererFunc: compare the rendered bytes with the live
// file, stage them next to it, validate the staged file with the proxy,
// ask the stale guard, then swap atomically and keep generations. It
// remembers which generation of each file is live and which one a reload
// last proved loaded, so a failed reload rolls back to exactly that one.
// A rejected config never touches the live file and never stops the
// daemon. Plan mode is a RendererFunc of its own (Plan).
package pipeline

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/consul-template/renderer"

	"github.com/switchyard/switchyard/renderer/internal/policy"
	"github.com/switchyard/switchyard/renderer/internal/status"
)

// Validator checks a staged config file. proxy.Nginx and friends implement
// it; nil means "no validation" (proxy none).
type Validator interface {
	Validate(ctx context.Context, path string) error
}

// Observer takes the latencies of the write path (status.Histograms).
type Observer interface {
	ObserveValidate(template string, d time.Duration)
	ObserveSwap(template string, d time.Duration)
}

// Target is one rendered destination.
type Target struct {
	Template  string    // source path, for logs
	Dest      string    // live file
	Proxy     string    // key of the proxy that loads Dest ("" = none)
	Validator Validator // nil = accept anything
	// Set validates the renders of every template of Proxy together (a
	// unit); nil: member by member with Validator.
	Set   SetValidator
	Keep  int   // generations kept for rollback (0 = DefaultKeep)
	Owner Owner // owner of the live file; -1 fields keep the live file's
	// Backends measures a config for the stale guard: servers per
	// upstream/backend block (NginxUpstreams, HAProxyBackends). nil turns
	// the guard off for this target.
	Backends func([]byte) Counts
	// RuntimeOnly reports whether next differs from live only in what the
	// proxy applies through its runtime interface and checks there (the
	// members of existing upstreams). Such a render skips the proxy's
	// validation on its way in, which is most of a membership change's
	// latency; Load validates it after the change is applied, and rolls
	// back and reloads if the proxy rejects it, so the file a restart
	// reads is still one the proxy accepts. nil: every render is
	// validated first.
	RuntimeOnly func(live, next []byte) bool
}

// DefaultKeep is how many generations are kept per destination.
const DefaultKeep = 5

// Options configures a Pipeline.
type Options struct {
	Log     *slog.Logger
	Timeout time.Duration // per validation
	// MaxRemoval (0..1) and HoldDown configure the stale guard (see
	// policy.Guard); MaxRemoval 0 turns it off.
	MaxRemoval float64
	HoldDown   time.Duration
	Status     *status.Recorder // nil: report nowhere
	Observer   Observer         // nil: measure nothing
}

// Pipeline renders into the live files. The runner calls Render from its
// goroutine; the supervisor calls Load, NextHold, AskHolds and Answer from
// its own.
type Pipeline struct {
	*tracker
	log     *slog.Logger
	timeout time.Duration
	rec     *status.Recorder
	obs     Observer
	ctx     context.Context // bounds validations: RendererFunc has no context
	targets map[string]*Target

	// wmu is held for every change of a live file and for every load of
	// a proxy (reload, verify, rollback): renders, held applies and
	// rollbacks never interleave, so the generation a reload proved is
	// exactly the one that was live while it ran.
	wmu     sync.Mutex
	files   map[string]*file
	pending map[string]pendingRender // unit members' renders until Flush

	gmu   sync.Mutex // the guard; its calls are quick, never under I/O
	guard *policy.Guard
}

// file is what the pipeline knows of one live file.
type file struct {
	live, verified int      // generations; 0: not one of ours / none proved yet
	unchecked      int      // a generation swapped in unvalidated (RuntimeOnly); Load validates it
	refused        [32]byte // sum of the last refused render
	hasRefused     bool
}

// New returns a pipeline for targets. ctx bounds every validation. It
// removes what an interrupted render left behind.
func New(ctx context.Context, o Options, targets []Target) *Pipeline {
	p := &Pipeline{log: o.Log, timeout: o.Timeout, rec: o.Status, obs: o.Observer, ctx: ctx,
		targets: map[string]*Target{}, files: map[string]*file{}, pending: map[string]pendingRender{},
		guard: policy.NewGuard(o.MaxRemoval, o.HoldDown)}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	var dests []string
	for _, t := range targets {
		if t.Keep <= 0 {
			t.Keep = DefaultKeep
		}
		t.Dest = filepath.Clean(t.Dest)
		p.targets[t.Dest] = &t
		dests = append(dests, t.Dest)
		p.sweep(t.Dest)
		p.files[t.Dest] = adopt(t.Dest)
	}
	p.tracker = newTracker(dests)
	return p
}

// adopt finds the generation of dest that is live at start. The proxy
// running now loaded it (or will, at its start), so it is the first
// rollback target.
func adopt(dest string) *file {
	gen, ok, err := latestGeneration(dest)
	if err != nil || !ok {
		return &file{}
	}
	live, exists, err := readLive(dest)
	g, gerr := readGeneration(dest, gen)
	if err != nil || gerr != nil || !equalLive(live, exists, g) {
		return &file{}
	}
	return &file{live: gen, verified: gen}
}

// Destinations returns the live files that proxy loads, sorted.
func (p *Pipeline) Destinations(proxy string) []string {
	var out []string
	for d, t := range p.targets {
		if t.Proxy == proxy {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// Render implements consul-template's renderer.Renderer. DidRender is true
// only when the live file changed: equal bytes are a no-op, or every
// catalog change would become a reload.
func (p *Pipeline) Render(in *renderer.RenderInput) (*renderer.RenderResult, error) {
	t, ok := p.targets[filepath.Clean(in.Path)]
	if !ok {
		return nil, fmt.Errorf("render %s: destination is not configured", in.Path)
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.unitOf(t) != nil {
		live, err := p.deferRender(t, in.Contents, in.Perms)
		if err != nil {
			return nil, err
		}
		return &renderer.RenderResult{WouldRender: true, Contents: live}, nil
	}
	live, swapped, err := p.write(t, in.Contents, in.Perms, false)
	if err != nil {
		return nil, err
	}
	return &renderer.RenderResult{DidRender: swapped, WouldRender: true, Contents: live}, nil
}

// write runs one render of t through the write path and returns the
// contents live afterwards. held: the render comes from the stale guard,
// which already judged it.
func (p *Pipeline) write(t *Target, contents []byte, perms os.FileMode, held bool) ([]byte, bool, error) {
	start := time.Now()
	f := p.files[t.Dest]
	live, exists, err := readLive(t.Dest)
	if err != nil {
		return nil, false, p.refuse(t, f, nil, writeError{err})
	}
	if equalLive(live, exists, contents) {
		p.clearHold(t.Dest)
		p.accepted(t, false)
		return live, false, nil
	}
	sum := sha256.Sum256(contents)
	if f.hasRefused && f.refused == sum {
		// Same bytes as the last refused render (an unrelated change or
		// a runner rebuild): the validator would say the same again.
		return nil, false, fmt.Errorf("template %s -> %s: unchanged since refused", t.Template, t.Dest)
	}
	quick := p.runtimeOnly(t, f, live, exists, contents)
	if quick {
		p.log.Debug("membership-only render: validated after the runtime apply", "template", t.Template, "dest", t.Dest)
	}
	s, err := p.stageRender(t, contents, perms, quick)
	if err != nil {
		return nil, false, p.refuse(t, f, &sum, err)
	}
	if !held && exists && p.hold(t, live, policy.Render{Contents: contents, Sum: sum, Perms: perms}) {
		s.discard()
		return live, false, nil
	}
	out, swapped, err := p.commit(t, f, s, exists, contents, start)
	if err == nil && quick {
		f.unchecked = f.live
	}
	return out, swapped, err
}

// runtimeOnly: the render can skip validation on its way in, because it
// changes only members of what the proxy proved it runs (the live file
// is the last proved generation, and checked).
func (p *Pipeline) runtimeOnly(t *Target, f *file, live []byte, exists bool, next []byte) bool {
	return t.RuntimeOnly != nil && exists && f.verified != 0 && f.live == f.verified &&
		f.unchecked != f.live && t.RuntimeOnly(live, next)
}

// stageRender stages a render, validated unless quick.
func (p *Pipeline) stageRender(t *Target, contents []byte, perms os.FileMode, quick bool) (*staged, error) {
	if quick {
		return stageOnly(t, contents, perms)
	}
	s, took, err := stageValidated(p.ctx, t, contents, perms, p.timeout)
	p.observeValidate(t, took, err)
	return s, err
}

func (p *Pipeline) commit(t *Target, f *file, s *staged, exists bool, contents []byte, start time.Time) ([]byte, bool, error) {
	_, hadGens, _ := latestGeneration(t.Dest)
	gen, err := s.commit(exists, f.verified)
	if err != nil {
		return nil, false, p.refuse(t, f, nil, err)
	}
	if exists && !hadGens && f.verified == 0 {
		// The first swap kept the file that was live before us as the
		// generation before this one: the proxy runs it.
		f.verified = gen - 1
	}
	f.live = gen
	if p.obs != nil {
		p.obs.ObserveSwap(t.Template, time.Since(start))
	}
	p.log.Info("config swapped", "template", t.Template, "dest", t.Dest, "proxy", t.Proxy,
		"bytes", len(contents), "generation", gen)
	p.accepted(t, true)
	return contents, true, nil
}

func (p *Pipeline) observeValidate(t *Target, took time.Duration, err error) {
	var we writeError
	if p.obs != nil && t.Validator != nil && !errors.As(err, &we) {
		p.obs.ObserveValidate(t.Template, took)
	}
}

func (p *Pipeline) accepted(t *Target, swapped bool) {
	p.files[t.Dest].hasRefused = false
	p.rec.Accepted(t.Dest, swapped, time.Now())
	p.tracker.accept(t.Dest, t.Proxy, swapped)
}

// refuse records a render of t that did not go live and returns err. A
// rejection remembers the bytes (sum), so they are not validated again
// until they change; a write failure does not, the next render retries.
// Either way a hold of t is over: its bytes are no longer the latest.
func (p *Pipeline) refuse(t *Target, f *file, sum *[32]byte, err error) error {
	kind := status.KindValidation
	var we writeError
	if errors.As(err, &we) {
		kind = status.KindWrite
	}
	if sum != nil {
		f.refused, f.hasRefused = *sum, true
	}
	p.clearHold(t.Dest)
	p.rec.Failed(t.Dest, kind, err)
	p.log.Error("render refused; live file untouched", "template", t.Template, "dest", t.Dest,
		"proxy", t.Proxy, "kind", kind, "err", err)
	p.tracker.refuse(t.Dest)
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
