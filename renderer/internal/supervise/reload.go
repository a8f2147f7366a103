package supervise

import (
	"errors"
	"fmt"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/pipeline"
	"github.com/switchyard/switchyard/renderer/internal/proxy"
)

// Retrying a reload the proxy could not be asked for (not running, its
// CLI or admin API not answering): first after retryFirst, doubling up to
// retryMax, until it is asked or a new batch asks anyway.
const (
	retryFirst = time.Second
	retryMax   = 30 * time.Second
)

// takeChanged moves the pipeline's changed proxies into pending and
// reports whether there were any.
func (l *loop) takeChanged() bool {
	got := false
	for _, p := range l.o.Pipeline.TakeChanged() {
		if _, ok := l.o.Proxies[p]; ok {
			l.pending[p] = true
			l.rec.ReloadPending(p, true)
			got = true
		}
	}
	return got
}

// onRendered: the pipeline accepted, held or refused a render.
func (l *loop) onRendered() error {
	l.armHold()
	got := l.takeChanged()
	if !l.ready && l.o.Pipeline.Complete() {
		if err := l.onFirstComplete(); err != nil {
			return err
		}
		// Swaps made before the proxies started (a unit's, written at the
		// end of the pass) still need a reload; a supervised proxy that
		// just loaded them has none pending.
		got = len(l.pending) > 0
	}
	if l.o.Once && l.o.Pipeline.Attempted() {
		return l.finishOnce()
	}
	if l.ready && got {
		l.deb.add(time.Now())
	}
	return nil
}

// onFirstComplete starts the proxies, each once: a supervised proxy then
// loads the live files, proved by its start.
func (l *loop) onFirstComplete() error {
	l.ready = true
	l.backoff = l.o.RebuildBackoff
	l.log.Info("first complete render")
	if l.o.Once {
		return nil
	}
	for _, name := range l.names() {
		if name == l.supName {
			if err := l.startSupervised(false); err != nil {
				return err
			}
			continue
		}
		if err := l.o.Proxies[name].Start(l.ctx); err != nil {
			return fmt.Errorf("start proxy %s: %w", name, err)
		}
	}
	return nil
}

// finishOnce ends a once run: reload once if anything changed, and say
// how it went in the error.
func (l *loop) finishOnce() error {
	l.stopRunner()
	if held := l.o.Pipeline.Held(); len(held) > 0 {
		return fmt.Errorf("%w: %v: the live file was kept (see --max-removal and --hold-down)", ErrHeld, held)
	}
	if l.ready && len(l.pending) > 0 {
		if !l.reload(sortedKeys(l.pending)) {
			l.onceErr = ErrReloadFailed
		}
	}
	if !l.o.Pipeline.Complete() {
		return ErrRejected
	}
	if l.onceErr != nil {
		return l.onceErr
	}
	return errFinished
}

func (l *loop) onReloadDue() error {
	now := time.Now()
	l.log.Debug("reload due", "proxies", sortedKeys(l.pending), "batch_age", now.Sub(l.deb.first).Round(time.Millisecond))
	l.deb.fired(now)
	l.reload(sortedKeys(l.pending))
	return nil
}

func (l *loop) onRetryDue() error {
	if len(l.pending) > 0 && l.ready {
		l.reload(sortedKeys(l.pending))
	}
	return nil
}

// reload reloads each named proxy once and reports whether every reload
// took. A proxy that could not be asked keeps its reload pending.
func (l *loop) reload(names []string) bool {
	ok, unasked := true, false
	for _, name := range names {
		if name == l.supName && l.exited == nil {
			unasked = true // dead, restarting: it loads the live files at start
			continue
		}
		switch l.reloadOne(name) {
		case reloadFailed:
			ok = false
			delete(l.pending, name)
		case reloadUnasked:
			unasked = true
		default:
			delete(l.pending, name)
		}
	}
	if unasked {
		l.retry.Reset(l.retryDelay)
		l.retryDelay = min(2*l.retryDelay, retryMax)
	} else {
		l.retryDelay = retryFirst
	}
	return ok
}

type reloadResult int

const (
	reloadTook reloadResult = iota
	reloadFailed
	reloadUnasked
)

// reloadOne reloads and verifies proxy name with the files frozen; the
// pipeline rolls back to the last proved files when it did not take.
func (l *loop) reloadOne(name string) reloadResult {
	p, log, start := l.o.Proxies[name], l.log.With("proxy", name), time.Now()
	how := byReload
	out := l.o.Pipeline.Load(name, func(ch pipeline.Change) error { return l.applyChange(name, p, ch, &how) })
	took := time.Since(start)
	if how == byFallback {
		l.rec.FellBack(name)
	}
	switch {
	case out.Err == nil && how == byRuntime:
		log.Info("membership applied at runtime", "took", took.Round(time.Millisecond))
		return reloadTook
	case out.Err == nil:
		l.observe(name, took, true)
		l.rec.Reloaded(name, start, nil)
		log.Info("proxy reloaded", "took", took.Round(time.Millisecond))
		return reloadTook
	case isNotRunning(out.Err):
		log.Warn("proxy could not be asked to reload; will retry", "err", out.Err, "in", l.retryDelay)
		return reloadUnasked
	}
	l.observe(name, took, false)
	l.rec.Reloaded(name, start, out.Err)
	log.Error("reload did not take", "err", out.Err)
	if out.RollbackErr != nil {
		log.Error("rollback", "err", out.RollbackErr)
	}
	if len(out.Restored) > 0 {
		l.recordRollback(name, out.Restored, out.RetryErr)
	}
	return reloadFailed
}

func (l *loop) recordRollback(name string, restored []string, retryErr error) {
	l.rec.RolledBack(name)
	if retryErr != nil {
		l.rec.Reloaded(name, time.Now(), fmt.Errorf("reload after rollback: %w", retryErr))
		l.log.Error("reload after rollback", "proxy", name, "err", retryErr)
		return
	}
	// The last proved config serves again, verified.
	l.rec.Reloaded(name, time.Now(), nil)
	l.log.Warn("rolled back and reloaded the last proved config", "proxy", name, "files", restored)
}

// reloadVerify asks p to reload and waits for the proof. A reload that
// could not even be asked is not a reload that failed: nothing is rolled
// back for it, it is retried.
func (l *loop) reloadVerify(p Reloader) error {
	if err := p.Reload(l.ctx); err != nil {
		var re *proxy.ReloadError
		if errors.As(err, &re) {
			return err
		}
		return unasked{err}
	}
	return p.Verify(l.ctx)
}

func (l *loop) observe(name string, d time.Duration, ok bool) {
	if l.o.Observer != nil {
		l.o.Observer.ObserveReload(name, d, ok)
	}
}

// unasked wraps an error of a proxy that could not be asked to reload.
type unasked struct{ err error }

func (u unasked) Error() string    { return u.err.Error() }
func (u unasked) Unwrap() error    { return u.err }
func (u unasked) NotRunning() bool { return true }

// isNotRunning recognises a "nothing was reloaded" error: any error in
// the chain with a NotRunning() bool method returning true.
func isNotRunning(err error) bool {
	var nr interface{ NotRunning() bool }
	return errors.As(err, &nr) && nr.NotRunning()
}
