package pipeline

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/policy"
)

// Units. Several templates that feed one proxy (a main config and the
// fragments it includes) are one unit: their renders of one runner pass
// wait in memory until the pass ends (Flush), then are staged, validated
// together in the proxy's whole configuration, and swapped together, or
// none is. The proxy never loads a combination of files that was not
// validated together, and a rejected member holds back the whole unit
// with the previous files of every member live.

// SetValidator validates several staged files (live path -> staged path)
// together, in the configuration the proxy loads.
type SetValidator interface {
	ValidateSet(ctx context.Context, replace map[string]string) error
}

// pendingRender is a unit member's render waiting for the end of the pass.
type pendingRender struct {
	contents []byte
	perms    os.FileMode
}

// unitOf returns the members of t's unit, sorted; nil when t is alone.
func (p *Pipeline) unitOf(t *Target) []string {
	if t.Proxy == "" {
		return nil
	}
	if m := p.Destinations(t.Proxy); len(m) > 1 {
		return m
	}
	return nil
}

// deferRender keeps a unit member's render for Flush and reports what the
// runner should believe is live.
func (p *Pipeline) deferRender(t *Target, contents []byte, perms os.FileMode) ([]byte, error) {
	live, exists, err := readLive(t.Dest)
	if err != nil {
		return nil, p.refuse(t, p.files[t.Dest], nil, writeError{err})
	}
	if equalLive(live, exists, contents) {
		delete(p.pending, t.Dest)
		p.clearHold(t.Dest)
		p.accepted(t, false)
		return live, nil
	}
	p.pending[t.Dest] = pendingRender{contents: contents, perms: perms}
	return live, nil
}

// Flush applies the renders units have kept since the last one: the
// supervisor calls it when the runner has finished a pass, so every
// member's render of the pass is in.
func (p *Pipeline) Flush() {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	done := map[string]bool{}
	for _, dest := range sortedKeys(p.pending) {
		if proxy := p.targets[dest].Proxy; !done[proxy] {
			done[proxy] = true
			p.flushUnit(proxy)
		}
	}
}

// flushUnit writes the pending renders of proxy's unit as one: the stale
// guard judges each member first (a held member keeps its live file and
// is validated later against the live files of the others), then the
// rest is staged, validated together and swapped, or refused together.
// A refused render stays pending, so a member whose change arrives in a
// later pass is validated with it: two watches of one change may fire in
// two passes.
func (p *Pipeline) flushUnit(proxy string) {
	if !p.unitRendered(proxy) {
		return // the proxy would load a member that does not exist yet
	}
	batch := map[string]pendingRender{}
	for _, d := range p.Destinations(proxy) {
		pr, ok := p.pending[d]
		if !ok {
			continue
		}
		if p.heldMember(p.targets[d], pr) {
			delete(p.pending, d) // the guard holds it now
			continue
		}
		batch[d] = pr
	}
	if len(batch) == 0 || p.sameAsRefused(batch) {
		return
	}
	start := time.Now()
	staged, err := p.stageUnit(batch)
	if err == nil {
		err = p.validateUnit(proxy, staged)
	}
	if err != nil {
		p.refuseUnit(batch, staged, err)
		return
	}
	for _, d := range sortedKeys(staged) {
		delete(p.pending, d)
		t, f := p.targets[d], p.files[d]
		_, exists, _ := readLive(d)
		if _, _, err := p.commit(t, f, staged[d], exists, batch[d].contents, start); err != nil {
			p.log.Error("unit swap failed part-way; a reload will load what is live, a failed one rolls back",
				"proxy", proxy, "dest", d, "err", err)
		}
	}
}

// unitRendered reports whether every member of proxy's unit has a file
// or a render: until then its first renders wait (a member's watches may
// take a pass longer than another's).
func (p *Pipeline) unitRendered(proxy string) bool {
	for _, d := range p.Destinations(proxy) {
		if _, ok := p.pending[d]; ok {
			continue
		}
		if _, exists, _ := readLive(d); !exists {
			return false
		}
	}
	return true
}

// heldMember asks the guard about a member's render; true: held.
func (p *Pipeline) heldMember(t *Target, pr pendingRender) bool {
	live, exists, err := readLive(t.Dest)
	if err != nil || !exists {
		return false
	}
	return p.hold(t, live, policy.Render{Contents: pr.contents, Sum: sha256.Sum256(pr.contents), Perms: pr.perms})
}

// sameAsRefused: every member's render is the one refused last time, so
// the unit would be refused again.
func (p *Pipeline) sameAsRefused(batch map[string]pendingRender) bool {
	for d, pr := range batch {
		f := p.files[d]
		if !f.hasRefused || f.refused != sha256.Sum256(pr.contents) {
			return false
		}
	}
	return true
}

func (p *Pipeline) stageUnit(batch map[string]pendingRender) (map[string]*staged, error) {
	out := map[string]*staged{}
	for _, d := range sortedKeys(batch) {
		s, err := stageOnly(p.targets[d], batch[d].contents, batch[d].perms)
		if err != nil {
			return out, err
		}
		out[d] = s
	}
	return out, nil
}

// validateUnit validates the staged members together with the proxy's
// set validator; a unit without one validates member by member.
func (p *Pipeline) validateUnit(proxy string, staged map[string]*staged) error {
	replace := map[string]string{}
	var set SetValidator
	for d, s := range staged {
		replace[d] = s.path
		if t := p.targets[d]; t.Set != nil {
			set = t.Set
		}
	}
	ctx, cancel := p.validationContext()
	defer cancel()
	if set != nil {
		return set.ValidateSet(ctx, replace)
	}
	for _, d := range sortedKeys(staged) {
		if err := validate(ctx, p.targets[d], staged[d].path, 0); err != nil {
			return err
		}
	}
	return nil
}

func (p *Pipeline) validationContext() (context.Context, context.CancelFunc) {
	if p.timeout > 0 {
		return context.WithTimeout(p.ctx, p.timeout)
	}
	return context.WithCancel(p.ctx)
}

// refuseUnit refuses every member of the batch for err; the staged files
// go.
func (p *Pipeline) refuseUnit(batch map[string]pendingRender, staged map[string]*staged, err error) {
	for _, s := range staged {
		s.discard()
	}
	for _, d := range sortedKeys(batch) {
		sum := sha256.Sum256(batch[d].contents)
		var memo *[32]byte
		var we writeError
		if !errors.As(err, &we) {
			memo = &sum
		}
		_ = p.refuse(p.targets[d], p.files[d], memo, err)
	}
}
