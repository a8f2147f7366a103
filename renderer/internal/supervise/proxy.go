package supervise

import (
	"fmt"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/pipeline"
)

// startSupervised starts the supervised proxy with the live files frozen,
// so the generations it loaded are recorded as proved (and a start that
// fails on a never-loaded file rolls back to the proved one and tries
// again). restart: after a death.
func (l *loop) startSupervised(restart bool) error {
	name := l.supName
	p := l.o.Proxies[name]
	out := l.o.Pipeline.Load(name, func(pipeline.Change) error { return p.Start(l.ctx) })
	if out.Err != nil && (len(out.Restored) == 0 || out.RetryErr != nil) {
		if !restart {
			return fmt.Errorf("%w: start proxy %s: %w", ErrProxyDied, name, out.Err)
		}
		l.log.Error("restart proxy", "proxy", name, "err", out.Err)
		return l.died(name, out.Err)
	}
	if len(out.Restored) > 0 {
		l.recordRollback(name, out.Restored, nil)
	}
	l.exited = p.Exited()
	delete(l.pending, name)
	l.rec.ProxyUp(name, restart)
	return nil
}

// onProxyDied: the supervised proxy's process exited without being asked
// to. Its exit channel stays closed, so the loop stops waiting on it
// until the proxy runs again: one exit is one death.
func (l *loop) onProxyDied() error {
	l.exited = nil
	l.log.Error("supervised proxy exited", "proxy", l.supName)
	return l.died(l.supName, fmt.Errorf("%s exited", l.supName))
}

// died applies the restart policy to one death of proxy name.
func (l *loop) died(name string, cause error) error {
	l.rec.ProxyDied(name, cause)
	d := l.restarts.Died(time.Now())
	if d.GiveUp {
		return fmt.Errorf("%w: %s died %d times within %s", ErrProxyDied, name, d.Deaths, l.restarts.Window)
	}
	l.log.Warn("restarting proxy", "proxy", name, "in", d.After, "deaths", d.Deaths, "max", l.restarts.Max)
	l.restart.Reset(d.After)
	return nil
}

func (l *loop) onRestartDue() error { return l.startSupervised(true) }
