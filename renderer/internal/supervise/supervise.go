// Package supervise is the renderer's main loop. It owns the
// consul-template runner (rebuilt when it dies, and after a Consul
// outage), starts a supervised proxy only after the first complete render
// and restarts it when it dies, asks Consul about renders the stale guard
// holds, and turns the pipeline's swaps into one debounced reload per
// batch, verified, and rolled back when it did not take. The decisions
// live in package policy and in the debouncer; the loop holds their state
// in fields and has one method per event.
package supervise

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/pipeline"
	"github.com/switchyard/switchyard/renderer/internal/policy"
	"github.com/switchyard/switchyard/renderer/internal/status"
)

// Pipeline is what the loop needs from the write path (pipeline.Pipeline,
// or pipeline.Plan in plan mode).
type Pipeline interface {
	Notify() <-chan struct{}
	TakeChanged() []string
	Complete() bool
	Attempted() bool
	Held() []string
	NextHold() (time.Time, bool)
	AskHolds(now time.Time) map[string][32]byte
	Answer(dest string, sum [32]byte, leaderErr error, now time.Time) bool
	Load(proxy string, load func(pipeline.Change) error) pipeline.Loaded
	// Flush writes what units of several templates kept during the pass.
	Flush()
}

// Reloader is a proxy: started once after the first complete render,
// reloaded after each batch of swaps, verified after each reload.
type Reloader interface {
	Name() string
	Start(ctx context.Context) error
	Reload(ctx context.Context) error
	Verify(ctx context.Context) error
	// Exited is closed when a supervised proxy's process has exited; nil
	// when the proxy is not our child. It stays closed until Start.
	Exited() <-chan struct{}
	Stop(ctx context.Context) error
}

// Engine is the consul-template runner, behind an interface so the loop
// can be tested with testing/synctest.
type Engine interface {
	Start() // blocks until Stop or a fatal error
	Stop()
	Fatal() <-chan error     // the runner is dead after a value here
	ServerErr() <-chan error // Consul errors while it retries
	Events() <-chan struct{} // the runner finished a pass that executed a template
	// TemplateErrors maps destinations to the error of their last
	// execution, for templates that failed before reaching the pipeline.
	TemplateErrors() map[string]error
}

// ReloadObserver takes reload latencies (status.Histograms).
type ReloadObserver interface {
	ObserveReload(proxy string, d time.Duration, ok bool)
}

// Errors of a once run, for exit codes.
var (
	ErrRejected     = errors.New("a rendered config was rejected")
	ErrReloadFailed = errors.New("a reload did not take")
	ErrHeld         = errors.New("the stale guard held a render")
	ErrProxyDied    = errors.New("the supervised proxy could not be kept alive")
)

// Options configures a Supervisor.
type Options struct {
	Log       *slog.Logger
	NewEngine func() (Engine, error)
	Pipeline  Pipeline
	Proxies   map[string]Reloader // by proxy key, as in pipeline.Target.Proxy
	Status    *status.Recorder    // nil: report nowhere
	Observer  ReloadObserver      // nil: measure nothing

	WaitMin, WaitMax time.Duration // reload debounce
	MinReloadGap     time.Duration
	RebuildBackoff   time.Duration // first wait before rebuilding a dead runner (default 1s)

	// RuntimeApply: a proxy that is a Patcher gets a change of membership
	// only (servers of existing upstreams/backends) through its runtime
	// interface instead of a reload (--runtime-apply).
	RuntimeApply bool

	// Once: stop after every template was rendered once, reload once if
	// anything changed, and return (renderer once).
	Once bool
	// MaxProxyDeaths within DeathWindow end Run with ErrProxyDied
	// (defaults: policy.DefaultMaxDeaths in policy.DefaultDeathWindow).
	MaxProxyDeaths int
	DeathWindow    time.Duration

	// ConsulUp reports whether Consul answers and has a leader, with the
	// runner's own client settings. The loop asks it after Consul errors
	// (to rebuild the runner once Consul is back) and before a held
	// render is applied. Nil: Consul is taken to answer.
	ConsulUp func(context.Context) error

	// Reread asks for the templates to be read again (SIGHUP);
	// CheckTemplates parses them first (destination -> error) so a
	// broken edit never replaces a working runner.
	Reread         <-chan struct{}
	CheckTemplates func() map[string]error
	Dests          []string // every destination, to clear what parses again
}

// Supervisor runs the renderer's main loop.
type Supervisor struct{ o Options }

// New returns a Supervisor.
func New(o Options) *Supervisor {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.RebuildBackoff <= 0 {
		o.RebuildBackoff = time.Second
	}
	if o.ConsulUp == nil {
		o.ConsulUp = func(context.Context) error { return nil }
	}
	for name, p := range o.Proxies {
		o.Status.AddProxy(name, p.Exited() != nil || isSupervised(p))
	}
	return &Supervisor{o: o}
}

// isSupervised asks a proxy that says whether it runs as our child before
// it has started (Exited is nil until then).
func isSupervised(p Reloader) bool {
	s, ok := p.(interface{ Supervised() bool })
	return ok && s.Supervised()
}

// Run runs until ctx ends (nil), a supervised proxy cannot be kept alive,
// or, in once mode, the single pass is done.
func (s *Supervisor) Run(ctx context.Context) error {
	l := newLoop(ctx, s.o)
	defer l.shutdown()
	if err := l.startRunner(); err != nil {
		return err
	}
	for {
		if err := l.step(); err != nil {
			if errors.Is(err, errFinished) {
				return nil
			}
			return err
		}
	}
}

// errFinished ends Run without an error.
var errFinished = errors.New("finished")

func newRestarts(o Options) *policy.Restarts {
	return policy.NewRestarts(o.MaxProxyDeaths, o.DeathWindow)
}
