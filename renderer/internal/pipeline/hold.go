package pipeline

import (
	"slices"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/policy"
	"github.com/switchyard/switchyard/renderer/internal/status"
)

// The stale guard's plumbing: the guard (policy.Guard) decides, the
// pipeline measures renders for it, reports its holds, and applies a hold
// once the supervisor brings Consul's answer.

// hold asks the guard about a validated render of t that differs from the
// live file, and reports whether it is held.
func (p *Pipeline) hold(t *Target, live []byte, r policy.Render) bool {
	if t.Backends == nil || !p.guard.On() {
		return false
	}
	before, after := t.Backends(live), t.Backends(r.Contents)
	p.gmu.Lock()
	held, fresh := p.guard.Judge(t.Dest, before, after, r, time.Now())
	h, _ := p.guard.Held(t.Dest)
	p.gmu.Unlock()
	if !held {
		p.rec.Unheld(t.Dest)
		return false
	}
	p.rec.Held(t.Dest, status.HoldInfo{Since: h.Since, Before: h.Before, After: h.After, Emptied: h.Emptied}, fresh)
	if fresh {
		p.log.Warn("stale guard: render removes too many backends; holding it", "template", t.Template,
			"dest", t.Dest, "backends_before", h.Before, "backends_after", h.After, "emptied", h.Emptied,
			"hold_down", p.guard.HoldDown)
	}
	// The live file is a config that served: proxies may start on it.
	p.tracker.accept(t.Dest, t.Proxy, false)
	if fresh {
		p.tracker.signal() // the loop arms its timer for the new hold
	}
	return true
}

func (p *Pipeline) clearHold(dest string) {
	p.gmu.Lock()
	_, had := p.guard.Held(dest)
	p.guard.Clear(dest)
	p.gmu.Unlock()
	if had {
		p.rec.Unheld(dest)
	}
}

// NextHold says when a held render wants Consul asked.
func (p *Pipeline) NextHold() (time.Time, bool) {
	p.gmu.Lock()
	defer p.gmu.Unlock()
	return p.guard.Next()
}

// AskHolds returns the holds due at now (dest -> sum of the held bytes);
// the caller asks Consul whether it has a leader and calls Answer for
// each.
func (p *Pipeline) AskHolds(now time.Time) map[string][32]byte {
	p.gmu.Lock()
	defer p.gmu.Unlock()
	return p.guard.Ask(now)
}

// Held returns, sorted, the destinations with a held render.
func (p *Pipeline) Held() []string {
	p.gmu.Lock()
	defer p.gmu.Unlock()
	var out []string
	for d := range p.targets {
		if _, ok := p.guard.Held(d); ok {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// Answer brings Consul's answer (err nil: it has a leader) about the hold
// of dest that held sum. With a leader the held render is written now;
// whether that works or not, the hold is over (a failing held render is
// reported like any render, never retried in a loop). It reports whether
// the live file changed.
func (p *Pipeline) Answer(dest string, sum [32]byte, leaderErr error, now time.Time) bool {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.gmu.Lock()
	h, apply := p.guard.Answer(dest, sum, leaderErr, now)
	p.gmu.Unlock()
	t := p.targets[dest]
	if leaderErr != nil {
		p.log.Warn("stale guard: Consul has no leader; still holding", "dest", dest, "err", leaderErr)
	}
	if !apply {
		return false
	}
	p.log.Warn("stale guard: hold-down passed and Consul has a leader; applying", "template", t.Template,
		"dest", dest, "held_for", now.Sub(h.Since).Round(time.Millisecond))
	p.clearHold(dest)
	_, swapped, _ := p.write(t, h.Contents, h.Perms, true)
	return swapped
}
