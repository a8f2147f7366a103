// Package supervise owns the consul-template runner and the proxies: it
// runs the runner for the life of the daemon (rebuilding it if it ever
// dies), starts a supervised proxy only after the first complete render,
// and turns the pipeline's swaps into one debounced reload per batch,
// verified, and rolled back when the reload did not take.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul-template/manager"
	"golang.org/x/sync/errgroup"
)

// Pipeline is what the supervisor needs from the write path.
type Pipeline interface {
	Notify() <-chan struct{}
	TakeChanged() []string
	Complete() bool
	Attempted() bool
	Rollback(proxy string, cause error) ([]string, error)
	// NextHold says when a render held by the stale guard is due;
	// ApplyHeld applies the due ones.
	NextHold() (time.Time, bool)
	ApplyHeld()
}

// Reloader is a proxy: started once after the first complete render,
// reloaded after each batch of swaps, verified after each reload.
type Reloader interface {
	Name() string
	Start(ctx context.Context) error
	Reload(ctx context.Context) error
	Verify(ctx context.Context) error
	// Exited is closed when a supervised proxy exits; nil when the proxy
	// is not our child.
	Exited() <-chan struct{}
	Stop(ctx context.Context) error
}

// Engine is the consul-template runner, behind an interface so the loop can
// be tested with testing/synctest.
type Engine interface {
	Start() // blocks until Stop or a fatal error
	Stop()
	Fatal() <-chan error     // the runner is dead after a value here
	ServerErr() <-chan error // Consul errors while it retries
	Events() <-chan struct{} // the runner finished a pass that executed a template
	// TemplateErrors lists templates whose last execution failed before
	// reaching the pipeline (a bad function call, a denied function).
	TemplateErrors() []error
}

// NewEngine adapts a consul-template runner.
func NewEngine(r *manager.Runner) Engine { return ctEngine{r} }

type ctEngine struct{ r *manager.Runner }

func (e ctEngine) Start()                  { e.r.Start() }
func (e ctEngine) Stop()                   { e.r.Stop() }
func (e ctEngine) Fatal() <-chan error     { return e.r.ErrCh }
func (e ctEngine) ServerErr() <-chan error { return e.r.ServerErrCh }
func (e ctEngine) Events() <-chan struct{} { return e.r.RenderEventCh() }

func (e ctEngine) TemplateErrors() []error {
	var errs []error
	evs := e.r.RenderEvents()
	for _, id := range sortedKeys(evs) {
		ev := evs[id]
		// Errors from our RendererFunc are the pipeline's business; only
		// execution errors (no contents produced) are reported here.
		if ev.Error != nil && ev.MissingDeps == nil {
			errs = append(errs, ev.Error)
		}
	}
	return errs
}

// Errors of a once run, for exit codes.
var (
	ErrRejected     = errors.New("a rendered config was rejected")
	ErrReloadFailed = errors.New("a reload did not take")
)

// Options configures a Supervisor.
type Options struct {
	Log       *slog.Logger
	NewEngine func() (Engine, error)
	Pipeline  Pipeline
	Proxies   map[string]Reloader // by proxy key, as in pipeline.Target.Proxy

	WaitMin, WaitMax time.Duration // reload debounce
	MinReloadGap     time.Duration
	RebuildBackoff   time.Duration // first wait before rebuilding a dead runner (default 1s)

	// Once: stop after every template was rendered once, reload once if
	// anything changed, and return (renderer once).
	Once bool
	// MaxProxyRestarts within a minute before Run gives up (default 3).
	MaxProxyRestarts int

	// ConsulUp reports whether Consul answers (and has a leader), with the
	// runner's own client settings (config.ConsulProbe). After the runner
	// reported Consul errors, Run polls it and rebuilds the runner once
	// Consul answers again (see the comment on probeFirst's const block).
	// Nil: Run rebuilds the runner right at the first error, and the new
	// runner's own retries find Consul.
	ConsulUp func(context.Context) error
}

// Recovering from a Consul outage. consul-template's watches keep the
// X-Consul-Index of their last answer across errors. A Consul that comes
// back with its data wiped (agent restart, rebuilt cluster) has lower
// indexes, and holds a query for a higher one for the whole block-query
// wait (60 s) before it answers and the view resets to index 0: the
// renderer would be blind for a minute. A rebuilt runner starts every watch
// at index 0, which Consul answers at once; unchanged output is a no-op in
// the pipeline and an emptied catalog is held by its stale guard, so a
// rebuild is safe, just not free (every watch fetches again). Hence: only
// after errors, only a runner that has had data (a runner that never
// rendered is at index 0 already), and never more often than outageGap,
// which doubles while errors keep coming back (a query Consul always
// refuses, an ACL denial, must not rebuild in a loop) and resets after a
// quiet minute.
//
// An index going backwards without any error is not watched for: it would
// take queries of our own on every watched endpoint, and X-Consul-Index
// legitimately moves back a little between servers with stale reads, so it
// would rebuild on noise. A wiped Consul breaks the watches' connections
// (or answers 5xx while leaderless) before it is back, which is this path.
const (
	probeFirst   = 250 * time.Millisecond // first re-probe after a failed one
	probeMax     = 2 * time.Second        // /v1/status/leader is cheap: poll at least this often
	probeTimeout = 5 * time.Second
	outageGapMax = 5 * time.Minute
	outageQuiet  = time.Minute // no Consul error for this long: outageGap starts over
)

// Supervisor runs the renderer's main loop. State lives in Run's goroutine.
type Supervisor struct {
	o Options

	reloads, failedReloads, rebuilds, outageRebuilds atomic.Int64

	// mu guards proxies, written by Run's goroutine and read by ProxyStats
	// from the status server's.
	mu      sync.Mutex
	proxies map[string]*ProxyStats
}

// New returns a Supervisor.
func New(o Options) *Supervisor {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.RebuildBackoff <= 0 {
		o.RebuildBackoff = time.Second
	}
	if o.MaxProxyRestarts <= 0 {
		o.MaxProxyRestarts = 3
	}
	s := &Supervisor{o: o, proxies: map[string]*ProxyStats{}}
	for name := range o.Proxies {
		s.proxies[name] = &ProxyStats{}
	}
	return s
}

// Stats are counters for tests and logs. Rebuilds counts runners that
// died; OutageRebuilds, runners replaced after a Consul outage.
type Stats struct{ Reloads, FailedReloads, Rebuilds, OutageRebuilds int64 }

// Stats returns the counters so far.
func (s *Supervisor) Stats() Stats {
	return Stats{s.reloads.Load(), s.failedReloads.Load(), s.rebuilds.Load(), s.outageRebuilds.Load()}
}

// ProxyStats is what the supervisor knows about one proxy's reloads.
type ProxyStats struct {
	Reloads       int64 // reloads that took (verified)
	FailedReloads int64 // reloads that did not take
	Rollbacks     int64 // failed reloads after which a previous generation was restored
	// LastReload is when the last reload was attempted (a rollback's
	// reload included); zero before the first.
	LastReload time.Time
	// LastError says why the last reload did not take; nil when it took,
	// including the reload of a rolled-back config, which then serves.
	LastError error
}

// ProxyStats returns a copy of the reload state of every proxy, by key.
func (s *Supervisor) ProxyStats() map[string]ProxyStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]ProxyStats, len(s.proxies))
	for k, v := range s.proxies {
		out[k] = *v
	}
	return out
}

// record updates the stats of proxy name under the mutex.
func (s *Supervisor) record(name string, fn func(*ProxyStats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.proxies[name]; st != nil {
		fn(st)
	}
}

// runner is one generation of the engine and the goroutine that runs it.
type runner struct {
	eng  Engine
	done chan struct{}
	// hadData: the runner finished a pass, so some of its watches hold a
	// Consul index that a wiped Consul would not answer for a minute.
	hadData bool
}

// Run runs until ctx ends (nil), or a supervised proxy cannot be kept
// alive, or, in once mode, the single pass is done.
func (s *Supervisor) Run(ctx context.Context) (err error) {
	log := s.o.Log
	var g errgroup.Group
	var cur *runner
	start := func() error {
		eng, err := s.o.NewEngine()
		if err != nil {
			return fmt.Errorf("create consul-template runner: %w", err)
		}
		r := &runner{eng: eng, done: make(chan struct{})}
		g.Go(func() error {
			defer close(r.done)
			eng.Start()
			return nil
		})
		cur = r
		return nil
	}
	// stopRunner stops the current runner and waits for its goroutine,
	// draining its error channel, which it may be blocked sending on.
	stopRunner := func() {
		if cur == nil {
			return
		}
		cur.eng.Stop()
		for {
			select {
			case <-cur.done:
				cur = nil
				return
			case <-cur.eng.Fatal():
			}
		}
	}
	if err := start(); err != nil {
		return err
	}

	// Consul outage recovery (see the comment on probeFirst's const block).
	// The probe runs in a goroutine of its own, one at a time, so the
	// loop never blocks on Consul; probeCtx ends before the deferred
	// g.Wait.
	probeCtx, cancelProbe := context.WithCancel(ctx)
	probeRes := make(chan error, 1)
	probeTimer := time.NewTimer(time.Hour)
	probeTimer.Stop()
	var (
		outageSince  time.Time // first error of the current outage; zero: none
		lastErrAt    time.Time
		lastOutageRb time.Time
		outageGap    = s.o.RebuildBackoff
		probeDelay   = probeFirst
		probing      bool
	)
	probe := func() {
		probing = true
		if s.o.ConsulUp == nil {
			probeRes <- nil // buffered, and empty while !probing
			return
		}
		g.Go(func() error {
			pctx, cancel := context.WithTimeout(probeCtx, probeTimeout)
			defer cancel()
			probeRes <- s.o.ConsulUp(pctx)
			return nil
		})
	}

	deb := newDebouncer(s.o.WaitMin, s.o.WaitMax, s.o.MinReloadGap)
	rebuild := time.NewTimer(time.Hour)
	rebuild.Stop()
	restart := time.NewTimer(time.Hour)
	restart.Stop()
	hold := time.NewTimer(time.Hour)
	hold.Stop()
	armHold := func() {
		if at, ok := s.o.Pipeline.NextHold(); ok {
			hold.Reset(max(time.Until(at), 0))
		} else {
			hold.Stop()
		}
	}
	defer func() {
		deb.stop()
		rebuild.Stop()
		restart.Stop()
		hold.Stop()
		probeTimer.Stop()
		cancelProbe()
		stopRunner()
		_ = g.Wait()
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for _, name := range s.names() {
			if serr := s.o.Proxies[name].Stop(stopCtx); serr != nil {
				log.Warn("proxy stop", "proxy", name, "err", serr)
			}
		}
	}()

	pending := map[string]bool{} // proxies with swapped files, not yet reloaded
	ready := false               // every template rendered once: proxies may start
	backoff := s.o.RebuildBackoff
	var restarts []time.Time
	var onceErr error

	for {
		var fatal, serverErr <-chan error
		var events <-chan struct{}
		if cur != nil {
			fatal, serverErr, events = cur.eng.Fatal(), cur.eng.ServerErr(), cur.eng.Events()
		}
		select {
		case <-ctx.Done():
			if s.o.Once {
				return fmt.Errorf("not every template rendered: %w", context.Cause(ctx))
			}
			log.Info("stopping")
			return nil

		case err := <-fatal:
			// The runner is dead. Rebuild it after a backoff: state lives
			// on disk and in the pipeline, so the new runner renders the
			// same bytes and nothing reloads needlessly.
			log.Error("consul-template runner failed; rebuilding", "err", err, "in", backoff)
			stopRunner()
			s.rebuilds.Add(1)
			rebuild.Reset(backoff)
			backoff = min(backoff*2, time.Minute)

		case <-rebuild.C:
			if err := start(); err != nil {
				log.Error("rebuild runner", "err", err)
				rebuild.Reset(backoff)
				backoff = min(backoff*2, time.Minute)
			}

		case err := <-serverErr:
			log.Warn("consul error; retrying, last config keeps serving", "err", err)
			now := time.Now()
			// The gap starts over after a quiet while: no error and no
			// outage rebuild (a runner waiting out the gap sees no new
			// errors; that is not quiet).
			quietSince := lastErrAt
			if lastOutageRb.After(quietSince) {
				quietSince = lastOutageRb
			}
			if !quietSince.IsZero() && now.Sub(quietSince) > outageQuiet {
				outageGap = s.o.RebuildBackoff
			}
			lastErrAt = now
			// once mode ends with its first pass, whose watches are at
			// index 0 until then: nothing to recover.
			if s.o.Once || !outageSince.IsZero() || !cur.hadData {
				break
			}
			outageSince = now
			probeDelay = probeFirst
			if !probing {
				probe()
			}

		case <-probeTimer.C:
			if !probing && !outageSince.IsZero() {
				probe()
			}

		case err := <-probeRes:
			probing = false
			if outageSince.IsZero() {
				break
			}
			if cur == nil || !cur.hadData {
				// The runner died meanwhile: the rebuild on Fatal starts
				// (or started) one at index 0 anyway.
				outageSince = time.Time{}
				break
			}
			now := time.Now()
			if err != nil {
				log.Debug("consul not answering yet", "err", err, "next_probe", probeDelay)
				probeTimer.Reset(probeDelay)
				probeDelay = min(2*probeDelay, probeMax)
				break
			}
			if due := lastOutageRb.Add(outageGap); !lastOutageRb.IsZero() && now.Before(due) {
				// Too soon after the last one: ask again when allowed,
				// Consul may be down again by then.
				probeTimer.Reset(due.Sub(now))
				break
			}
			outage := now.Sub(outageSince).Round(time.Millisecond)
			if s.o.ConsulUp != nil {
				log.Warn("consul answers again; rebuilding the consul-template runner so its watches restart at index 0", "outage", outage)
			} else {
				log.Warn("consul error; rebuilding the consul-template runner so its watches restart at index 0 when consul answers", "outage", outage)
			}
			stopRunner()
			outageSince = time.Time{}
			lastOutageRb = now
			outageGap = min(2*outageGap, outageGapMax)
			s.outageRebuilds.Add(1)
			if err := start(); err != nil {
				log.Error("rebuild runner", "err", err)
				rebuild.Reset(backoff)
				backoff = min(backoff*2, time.Minute)
			}

		case <-events:
			// The runner finished a pass over every template.
			cur.hadData = true
			if s.o.Once {
				// A template that cannot even execute fails the run.
				if errs := cur.eng.TemplateErrors(); len(errs) > 0 {
					return fmt.Errorf("%w: %w", ErrRejected, errors.Join(errs...))
				}
				continue
			}
			// Every swap of this pass happened before the event was sent:
			// collect them, so a leading-edge batch reloads once for the
			// whole pass (several templates, several proxies) and now.
			now := time.Now()
			var got bool
			for _, p := range s.o.Pipeline.TakeChanged() {
				if _, ok := s.o.Proxies[p]; ok {
					pending[p] = true
					got = true
				}
			}
			if ready && len(pending) > 0 {
				if got {
					deb.add(now)
				}
				deb.flush(now)
			}

		case <-hold.C:
			s.o.Pipeline.ApplyHeld()
			armHold()

		case <-s.o.Pipeline.Notify():
			armHold()
			for _, p := range s.o.Pipeline.TakeChanged() {
				if _, ok := s.o.Proxies[p]; ok {
					pending[p] = true
				}
			}
			if !ready && s.o.Pipeline.Complete() {
				ready = true
				backoff = s.o.RebuildBackoff
				log.Info("first complete render")
				if !s.o.Once {
					if err := s.startProxies(ctx, pending); err != nil {
						return err
					}
				}
			}
			if s.o.Once && s.o.Pipeline.Attempted() {
				stopRunner()
				if len(pending) > 0 && ready {
					if !s.reload(ctx, sortedKeys(pending)) {
						onceErr = ErrReloadFailed
					}
				}
				if !s.o.Pipeline.Complete() {
					return ErrRejected
				}
				return onceErr
			}
			if ready && len(pending) > 0 {
				deb.add(time.Now())
			}

		case <-deb.C():
			now := time.Now()
			// How long the batch waited: the debounce's share of the
			// catalog-change-to-served latency.
			log.Debug("reload due", "proxies", sortedKeys(pending), "batch_age", now.Sub(deb.first).Round(time.Millisecond))
			deb.fired(now)
			names := sortedKeys(pending)
			clear(pending)
			s.reload(ctx, names)

		case <-s.exited():
			now := time.Now()
			restarts = append(restarts, now)
			for len(restarts) > 0 && now.Sub(restarts[0]) > time.Minute {
				restarts = restarts[1:]
			}
			if len(restarts) > s.o.MaxProxyRestarts {
				return fmt.Errorf("proxy exited %d times within a minute; giving up", len(restarts))
			}
			log.Error("supervised proxy exited; restarting", "restarts", len(restarts))
			restart.Reset(time.Duration(len(restarts)) * time.Second)

		case <-restart.C:
			if err := s.startSupervised(ctx); err != nil {
				log.Error("restart proxy", "err", err)
				restarts = append(restarts, time.Now())
				if len(restarts) > s.o.MaxProxyRestarts {
					return fmt.Errorf("proxy cannot be kept alive: %w", err)
				}
				restart.Reset(time.Duration(len(restarts)) * time.Second)
			}
		}
	}
}

// startProxies starts every proxy once, after the first complete render.
// A supervised proxy then loads the live files: its pending reload is moot.
func (s *Supervisor) startProxies(ctx context.Context, pending map[string]bool) error {
	for _, name := range s.names() {
		p := s.o.Proxies[name]
		if err := p.Start(ctx); err != nil {
			return fmt.Errorf("start proxy %s: %w", name, err)
		}
		if p.Exited() != nil {
			delete(pending, name)
		}
	}
	return nil
}

func (s *Supervisor) startSupervised(ctx context.Context) error {
	for _, name := range s.names() {
		p := s.o.Proxies[name]
		if ch := p.Exited(); ch != nil {
			select {
			case <-ch:
				if err := p.Start(ctx); err != nil {
					return fmt.Errorf("proxy %s: %w", name, err)
				}
			default:
			}
		}
	}
	return nil
}

// exited returns the exit channel of a supervised proxy (at most one
// proxy is supervised, config.Validate makes sure).
func (s *Supervisor) exited() <-chan struct{} {
	for _, name := range s.names() {
		if ch := s.o.Proxies[name].Exited(); ch != nil {
			return ch
		}
	}
	return nil
}

// reload reloads each named proxy once and verifies it. A reload that did
// not take is rolled back: previous generation restored, reloaded again.
// It reports whether every reload took.
func (s *Supervisor) reload(ctx context.Context, names []string) bool {
	ok := true
	for _, name := range names {
		p := s.o.Proxies[name]
		log := s.o.Log.With("proxy", name)
		start := time.Now()
		err := p.Reload(ctx)
		if err == nil {
			err = p.Verify(ctx)
		}
		if err == nil {
			s.reloads.Add(1)
			s.record(name, func(st *ProxyStats) { st.Reloads++; st.LastReload = start; st.LastError = nil })
			log.Info("proxy reloaded", "took", time.Since(start).Round(time.Millisecond))
			continue
		}
		if isNotRunning(err) {
			// Nothing was reloaded: not a failure, and not a reload that
			// took either, so the stats stay as they are.
			log.Warn("proxy not running; it will load the new config when it starts", "err", err)
			continue
		}
		ok = false
		s.failedReloads.Add(1)
		s.record(name, func(st *ProxyStats) { st.FailedReloads++; st.LastReload = start; st.LastError = err })
		log.Error("reload did not take", "err", err)
		restored, rerr := s.o.Pipeline.Rollback(name, err)
		if rerr != nil {
			log.Error("rollback", "err", rerr)
		}
		if len(restored) == 0 {
			continue
		}
		s.record(name, func(st *ProxyStats) { st.Rollbacks++ })
		rbStart := time.Now()
		rbErr := p.Reload(ctx)
		if rbErr == nil {
			rbErr = p.Verify(ctx)
		}
		switch {
		case rbErr == nil:
			// The previous good config serves, verified.
			s.record(name, func(st *ProxyStats) { st.LastReload = rbStart; st.LastError = nil })
			log.Warn("rolled back and reloaded the previous good config", "files", restored)
		case isNotRunning(rbErr):
		default:
			s.record(name, func(st *ProxyStats) {
				st.LastReload = rbStart
				st.LastError = fmt.Errorf("%w; reload after rollback: %w", err, rbErr)
			})
			log.Error("reload after rollback", "err", rbErr)
		}
	}
	return ok
}

func (s *Supervisor) names() []string { return sortedKeys(s.o.Proxies) }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// isNotRunning recognises a Reloader's "nothing to reload" error: any
// error in the chain with a NotRunning() bool method returning true.
func isNotRunning(err error) bool {
	var nr interface{ NotRunning() bool }
	return errors.As(err, &nr) && nr.NotRunning()
}
