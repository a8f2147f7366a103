package supervise

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/renderer/internal/policy"
	"github.com/switchyard/switchyard/renderer/internal/status"
)

// probeTimeout bounds every Consul probe the loop starts.
const probeTimeout = 5 * time.Second

// loop is the state of one Run. Only Run's goroutine touches its fields;
// goroutines it starts (the runner, probes, held applies) report back
// through its channels.
type loop struct {
	o   Options
	ctx context.Context
	log *slog.Logger
	rec *status.Recorder
	g   errgroup.Group

	// The consul-template runner, its rebuild after a death, and outage
	// recovery.
	cur        *runner
	rebuild    *time.Timer
	backoff    time.Duration
	outage     *policy.Outage
	probeTimer *time.Timer
	probeRes   chan error
	probeCtx   context.Context
	cancel     context.CancelFunc

	// Reloads: proxies with files they have not loaded, batched by deb;
	// retry brings back a reload a proxy could not be asked for.
	ready      bool // every template rendered once: proxies may start
	pending    map[string]bool
	deb        *debouncer
	retry      *time.Timer
	retryDelay time.Duration

	// The supervised proxy (at most one: config.Validate), its exit
	// channel while we wait on it, and its restart policy.
	supName  string
	exited   <-chan struct{}
	restarts *policy.Restarts
	restart  *time.Timer

	// The stale guard: when the next hold is due, and the answer of the
	// goroutine that asked Consul and applied it.
	hold     *time.Timer
	holdDone chan struct{}
	asking   bool

	onceErr error
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

func newLoop(ctx context.Context, o Options) *loop {
	l := &loop{o: o, ctx: ctx, log: o.Log, rec: o.Status,
		rebuild: stoppedTimer(), backoff: o.RebuildBackoff,
		outage: policy.NewOutage(o.RebuildBackoff), probeTimer: stoppedTimer(), probeRes: make(chan error, 1),
		pending: map[string]bool{}, deb: newDebouncer(o.WaitMin, o.WaitMax, o.MinReloadGap),
		retry: stoppedTimer(), retryDelay: retryFirst,
		restarts: newRestarts(o), restart: stoppedTimer(),
		hold: stoppedTimer(), holdDone: make(chan struct{}, 1)}
	l.probeCtx, l.cancel = context.WithCancel(ctx)
	for _, name := range l.names() {
		if isSupervised(o.Proxies[name]) {
			l.supName = name
		}
	}
	return l
}

// step waits for one event and handles it.
func (l *loop) step() error {
	var fatal, serverErr <-chan error
	var events <-chan struct{}
	if l.cur != nil {
		fatal, serverErr, events = l.cur.eng.Fatal(), l.cur.eng.ServerErr(), l.cur.eng.Events()
	}
	select {
	case <-l.ctx.Done():
		return l.onStop()
	case err := <-fatal:
		return l.onRunnerDied(err)
	case <-l.rebuild.C:
		return l.onRebuildDue()
	case err := <-serverErr:
		return l.onConsulError(err)
	case <-l.probeTimer.C:
		return l.onProbeDue()
	case err := <-l.probeRes:
		return l.onProbeAnswer(err)
	case <-events:
		return l.onPass()
	case <-l.o.Pipeline.Notify():
		return l.onRendered()
	case <-l.deb.C():
		return l.onReloadDue()
	case <-l.retry.C:
		return l.onRetryDue()
	case <-l.exited:
		return l.onProxyDied()
	case <-l.restart.C:
		return l.onRestartDue()
	case <-l.hold.C:
		return l.onHoldDue()
	case <-l.holdDone:
		return l.onHoldAnswered()
	case <-l.o.Reread:
		return l.onReread()
	}
}

func (l *loop) onStop() error {
	if l.o.Once {
		return fmt.Errorf("not every template rendered: %w", context.Cause(l.ctx))
	}
	l.log.Info("stopping")
	return errFinished
}

// shutdown stops everything Run started, proxies last (they keep serving
// until then).
func (l *loop) shutdown() {
	for _, t := range []*time.Timer{l.rebuild, l.probeTimer, l.retry, l.restart, l.hold} {
		t.Stop()
	}
	l.deb.stop()
	l.cancel()
	l.stopRunner()
	_ = l.g.Wait()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(l.ctx), 30*time.Second)
	defer cancel()
	for _, name := range l.names() {
		if err := l.o.Proxies[name].Stop(ctx); err != nil {
			l.log.Warn("proxy stop", "proxy", name, "err", err)
		}
	}
}

func (l *loop) names() []string { return sortedKeys(l.o.Proxies) }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
