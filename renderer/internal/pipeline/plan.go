package pipeline

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/consul-template/renderer"
)

// Plan is the RendererFunc of `renderer plan`: it validates every render
// as the pipeline would, prints its diff against the live file, and
// changes nothing (no swap, no generation, no sweep of leftovers).
type Plan struct {
	*tracker
	out     io.Writer
	ctx     context.Context
	timeout time.Duration
	targets map[string]*Target
	mu      sync.Mutex // one render at a time: their diffs must not interleave
}

// NewPlan returns a plan over targets, printing to out.
func NewPlan(ctx context.Context, out io.Writer, timeout time.Duration, targets []Target) *Plan {
	p := &Plan{out: out, ctx: ctx, timeout: timeout, targets: map[string]*Target{}}
	var dests []string
	for _, t := range targets {
		t.Dest = filepath.Clean(t.Dest)
		p.targets[t.Dest] = &t
		dests = append(dests, t.Dest)
	}
	p.tracker = newTracker(dests)
	return p
}

// Render implements consul-template's renderer.Renderer.
func (p *Plan) Render(in *renderer.RenderInput) (*renderer.RenderResult, error) {
	t, ok := p.targets[filepath.Clean(in.Path)]
	if !ok {
		return nil, fmt.Errorf("render %s: destination is not configured", in.Path)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	live, exists, err := readLive(t.Dest)
	if err != nil {
		p.tracker.refuse(t.Dest)
		return nil, err
	}
	if equalLive(live, exists, in.Contents) {
		p.tracker.accept(t.Dest, "", false)
		return &renderer.RenderResult{WouldRender: true, Contents: live}, nil
	}
	// Staged next to the live file, as a real render, so relative
	// includes resolve the same; removed right after.
	s, _, err := stageValidated(p.ctx, t, in.Contents, in.Perms, p.timeout)
	if err != nil {
		fmt.Fprintf(p.out, "--- %s (live)\n+++ %s (rendered, REJECTED)\n%v\n", t.Dest, t.Dest, err)
		p.tracker.refuse(t.Dest)
		return nil, err
	}
	s.discard()
	fmt.Fprintf(p.out, "--- %s (live)\n+++ %s (rendered, valid)\n", t.Dest, t.Dest)
	writeDiff(p.out, live, in.Contents)
	p.tracker.accept(t.Dest, "", false)
	return &renderer.RenderResult{WouldRender: true, Contents: in.Contents}, nil
}

// The supervisor's side of a plan: nothing is ever held or loaded.

// NextHold implements the supervisor's Pipeline: a plan holds nothing.
func (p *Plan) NextHold() (time.Time, bool) { return time.Time{}, false }

// AskHolds implements the supervisor's Pipeline.
func (p *Plan) AskHolds(time.Time) map[string][32]byte { return nil }

// Answer implements the supervisor's Pipeline.
func (p *Plan) Answer(string, [32]byte, error, time.Time) bool { return false }

// Held implements the supervisor's Pipeline.
func (p *Plan) Held() []string { return nil }

// Flush implements the supervisor's Pipeline: a plan validates each
// render as it comes (a unit's members each against the others' live
// files).
func (p *Plan) Flush() {}

// Load implements the supervisor's Pipeline: a plan loads nothing.
func (p *Plan) Load(string, func(Change) error) Loaded { return Loaded{} }
