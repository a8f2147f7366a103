package supervise

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/consul-template/manager"

	"github.com/switchyard/switchyard/renderer/internal/status"
)

// runner is one generation of the engine and the goroutine that runs it.
type runner struct {
	eng  Engine
	done chan struct{}
	// hadData: the runner finished a pass, so some of its watches hold a
	// Consul index that a wiped Consul would not answer for a minute.
	hadData bool
	// thr: Consul's refusals as this runner met them, and the rate limit
	// of the lines reporting Consul errors.
	thr throttle
}

func (l *loop) startRunner() error {
	eng, err := l.o.NewEngine()
	if err != nil {
		return fmt.Errorf("create consul-template runner: %w", err)
	}
	r := &runner{eng: eng, done: make(chan struct{})}
	l.g.Go(func() error {
		defer close(r.done)
		eng.Start()
		return nil
	})
	l.cur = r
	return nil
}

// stopRunner stops the current runner and waits for its goroutine,
// draining its error channel, which it may be blocked sending on.
func (l *loop) stopRunner() {
	if l.cur == nil {
		return
	}
	l.cur.eng.Stop()
	for {
		select {
		case <-l.cur.done:
			l.cur = nil
			return
		case <-l.cur.eng.Fatal():
		}
	}
}

// replaceRunner swaps the runner for a new one, whose watches start at
// index 0; on failure a rebuild is scheduled.
func (l *loop) replaceRunner() {
	l.stopRunner()
	l.outage.RunnerReplaced()
	if err := l.startRunner(); err != nil {
		l.log.Error("rebuild runner", "err", err)
		l.scheduleRebuild()
	}
}

func (l *loop) scheduleRebuild() {
	l.rebuild.Reset(l.backoff)
	l.backoff = min(l.backoff*2, time.Minute)
}

// onRunnerDied: state lives on disk and in the pipeline, so the rebuilt
// runner renders the same bytes and nothing reloads needlessly.
func (l *loop) onRunnerDied(err error) error {
	l.log.Error("consul-template runner failed; rebuilding", "err", err, "in", l.backoff)
	l.stopRunner()
	l.outage.RunnerReplaced()
	l.rec.RunnerRebuilt(false)
	l.scheduleRebuild()
	return nil
}

func (l *loop) onRebuildDue() error {
	if err := l.startRunner(); err != nil {
		l.log.Error("rebuild runner", "err", err)
		l.scheduleRebuild()
	}
	return nil
}

// onConsulError: a refusal (429, resets while refused) is counted and
// reported but is not an outage: no probe, no rebuild, Consul not down.
func (l *loop) onConsulError(err error) error {
	now := time.Now()
	reason := l.cur.thr.classify(err, now)
	if reason != "" {
		l.rec.ConsulThrottled(reason, err, now)
		l.logConsulErrors(reason, err, now)
		return nil
	}
	l.rec.ConsulError(err, now)
	l.logConsulErrors(reasonOutage, err, now)
	// once mode ends with its first pass, whose watches are at index 0.
	if !l.o.Once && l.outage.ConsulError(now, l.cur != nil && l.cur.hadData) {
		l.probe()
	}
	return nil
}

// logConsulErrors writes at most one line per consulLogEvery, naming the
// cause and counting what it covers: every watch retries on its own, so
// a line per error would be a line per dependency per retry.
func (l *loop) logConsulErrors(reason string, err error, now time.Time) {
	counts, due := l.cur.thr.note(reason, now)
	if !due {
		return
	}
	text := l.rec.Redact(firstLine(err.Error()))
	refused := counts[status.Throttle429] + counts[status.ThrottleConnReset]
	if refused == 0 {
		l.log.Warn("consul error; retrying, last config keeps serving", "errors", counts[reasonOutage], "err", text)
		return
	}
	missing := l.cur.missingDeps()
	l.rec.MissingDeps(missing)
	l.log.Warn("consul refuses the renderer: too many connections from this address (http_max_conns_per_client); retrying with backoff",
		"cause", reason, "refused_429", counts[status.Throttle429], "resets", counts[status.ThrottleConnReset],
		"other_errors", counts[reasonOutage], "missing_dependencies", missing, "err", text)
}

// probe asks Consul in a goroutine of its own, one at a time, so the loop
// never blocks on Consul.
func (l *loop) probe() {
	l.g.Go(func() error {
		ctx, cancel := context.WithTimeout(l.probeCtx, probeTimeout)
		defer cancel()
		l.probeRes <- l.o.ConsulUp(ctx) // buffered, empty while probing
		return nil
	})
}

func (l *loop) onProbeDue() error {
	if l.outage.ProbeDue() {
		l.probe()
	}
	return nil
}

func (l *loop) onProbeAnswer(err error) error {
	if err == nil {
		l.rec.ConsulAnswers()
	}
	step := l.outage.ProbeAnswered(time.Now(), err, l.cur != nil && l.cur.hadData)
	if step.ProbeIn > 0 {
		l.log.Debug("consul not answering yet", "err", err, "next_probe", step.ProbeIn)
		l.probeTimer.Reset(step.ProbeIn)
	}
	if step.Rebuild {
		l.log.Warn("consul answers again; rebuilding the consul-template runner so its watches restart at index 0",
			"outage", step.Outage.Round(time.Millisecond))
		l.rec.RunnerRebuilt(true)
		l.replaceRunner()
	}
	return nil
}

// onPass: the runner finished a pass over every template, so Consul
// answered. Units of several templates are written now that all their
// renders of the pass are in; templates that failed to execute are
// reported; every swap of the pass happened before the event, so a
// leading-edge batch reloads once for the whole pass, now.
func (l *loop) onPass() error {
	l.cur.hadData = true
	l.rec.ConsulAnswers()
	l.notePass()
	l.o.Pipeline.Flush()
	errs := l.cur.eng.TemplateErrors()
	for _, dest := range sortedKeys(errs) {
		l.rec.Failed(dest, status.KindExecute, errs[dest])
		l.log.Error("template failed to execute; live file untouched", "dest", dest, "err", errs[dest])
	}
	if l.o.Once {
		if len(errs) > 0 {
			return fmt.Errorf("%w: %v", ErrRejected, errs[sortedKeys(errs)[0]])
		}
		return nil
	}
	got := l.takeChanged()
	if l.ready && len(l.pending) > 0 {
		now := time.Now()
		if got {
			l.deb.add(now)
		}
		l.deb.flush(now)
	}
	return nil
}

// notePass records the dependencies still without data, and ends a
// refusal episode once nothing is missing or refusals stopped long ago.
func (l *loop) notePass() {
	missing := l.cur.missingDeps()
	l.rec.MissingDeps(missing)
	if l.cur.thr.over(missing, time.Now()) {
		if !l.cur.thr.lastRefusal.IsZero() && missing == 0 {
			l.log.Warn("consul serves every dependency again; complete render possible")
			l.cur.thr.lastRefusal = time.Time{}
		}
		l.rec.ThrottleOver()
	}
}

// missingDeps asks an engine that can tell how many dependencies have no
// data; an engine that cannot (test fakes) reports none.
func (r *runner) missingDeps() int {
	if m, ok := r.eng.(interface{ MissingDeps() int }); ok {
		return m.MissingDeps()
	}
	return 0
}

// onReread reads the templates again (SIGHUP), only if they all parse.
func (l *loop) onReread() error {
	if l.o.CheckTemplates != nil {
		errs := l.o.CheckTemplates()
		for _, dest := range l.o.Dests {
			l.rec.ParseFailed(dest, errs[dest])
		}
		if len(errs) > 0 {
			for _, dest := range sortedKeys(errs) {
				l.log.Error("template does not parse; keeping the running templates", "dest", dest, "err", errs[dest])
			}
			return nil
		}
	}
	l.log.Info("reading the templates again")
	l.replaceRunner()
	return nil
}

// NewEngine adapts a consul-template runner; onStop (if not nil) runs
// after the runner stopped, to release what was built for it.
func NewEngine(r *manager.Runner, onStop func()) Engine { return ctEngine{r, onStop} }

type ctEngine struct {
	r      *manager.Runner
	onStop func()
}

func (e ctEngine) Start() { e.r.Start() }
func (e ctEngine) Stop() {
	e.r.Stop()
	if e.onStop != nil {
		e.onStop()
	}
}
func (e ctEngine) Fatal() <-chan error     { return e.r.ErrCh }
func (e ctEngine) ServerErr() <-chan error { return e.r.ServerErrCh }
func (e ctEngine) Events() <-chan struct{} { return e.r.RenderEventCh() }

// TemplateErrors: errors from our RendererFunc are the pipeline's
// business; only execution errors (no contents produced) are reported.
func (e ctEngine) TemplateErrors() map[string]error {
	out := map[string]error{}
	for _, ev := range e.r.RenderEvents() {
		if ev.Error == nil || ev.MissingDeps != nil {
			continue
		}
		for _, tc := range ev.TemplateConfigs {
			if tc.Destination != nil {
				out[*tc.Destination] = ev.Error
			}
		}
	}
	return out
}

// MissingDeps counts the distinct dependencies the templates used at the
// runner's last pass that have no data yet.
func (e ctEngine) MissingDeps() int {
	seen := map[string]bool{}
	for _, ev := range e.r.RenderEvents() {
		if ev.MissingDeps == nil {
			continue
		}
		for _, d := range ev.MissingDeps.List() {
			seen[d.String()] = true
		}
	}
	return len(seen)
}
