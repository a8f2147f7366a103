package supervise

import (
	"context"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/pipeline"
)

// Patcher is a Reloader that can apply some changes to the running proxy
// without a reload: a reload closes the idle keep-alive connections of the
// old workers while clients may be sending on them (issue 9), so a change
// of membership only (servers added to, removed from or changed in
// upstreams/backends that exist already) goes through the proxy's runtime
// interface instead.
type Patcher interface {
	// Patch brings the running proxy from running to live (destination ->
	// bytes, pipeline.Change) and verifies that it took. patched false with
	// a nil error: the change is structural, or not one this proxy can
	// apply at runtime; the caller reloads. An error: it tried and could
	// not apply or verify; the caller reloads, which makes the proxy equal
	// to the files whatever state the attempt left.
	Patch(ctx context.Context, running, live map[string][]byte) (patched bool, err error)
}

// How a change reached a proxy.
const (
	byRuntime  = "runtime"
	byReload   = "reload"
	byFallback = "fallback" // a runtime apply failed, then a reload
)

// applyChange applies ch to p: at runtime when p can and the change is
// membership only, else by a reload. It reports how in *how; its error is
// the reload's (a failed runtime apply alone is not a failed load).
func (l *loop) applyChange(name string, p Reloader, ch pipeline.Change, how *string) error {
	*how = byReload
	if pt, ok := p.(Patcher); ok && l.o.RuntimeApply && len(ch.Running) > 0 && l.running(name) {
		start := time.Now()
		patched, err := pt.Patch(l.ctx, ch.Running, ch.Live)
		switch {
		case err != nil:
			l.rec.RuntimeApplied(name, start, err)
			l.log.Warn("runtime apply failed; reloading instead", "proxy", name, "err", err)
			*how = byFallback
		case patched:
			l.rec.RuntimeApplied(name, start, nil)
			l.observeRuntime(name, time.Since(start))
			*how = byRuntime
			return nil
		}
	}
	return l.reloadVerify(p)
}

// running reports whether name has a process to patch: a supervised proxy
// that is not up loads the live files when it starts.
func (l *loop) running(name string) bool {
	return name != l.supName || l.exited != nil
}

// RuntimeObserver takes the latencies of runtime applies
// (status.Histograms); an Observer that is not one measures reloads only.
type RuntimeObserver interface {
	ObserveRuntimeApply(proxy string, d time.Duration)
}

func (l *loop) observeRuntime(name string, d time.Duration) {
	if o, ok := l.o.Observer.(RuntimeObserver); ok {
		o.ObserveRuntimeApply(name, d)
	}
}
