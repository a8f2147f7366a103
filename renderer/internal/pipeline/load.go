package pipeline

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"

	"github.com/switchyard/switchyard/renderer/internal/prio"
	"github.com/switchyard/switchyard/renderer/internal/status"
)

// Loaded is the outcome of Load.
type Loaded struct {
	Err         error    // the load's own error; nil: it took
	Restored    []string // files put back to their last proved generation
	RollbackErr error    // restoring failed for some file
	RetryErr    error    // the load after the rollback; nil: the restored files serve
}

// Change is what a load asks a proxy to take: each file of the proxy as
// the last proved load left it (Running; absent when none was proved or
// its generation is gone) and as it is live now (Live). A proxy that can
// apply some differences at runtime compares the two; one that reloads
// reads the live files itself.
type Change struct {
	Running map[string][]byte
	Live    map[string][]byte
}

// Load runs load, a start or reload of proxy and its verification, with
// every file frozen: no render, held apply or rollback changes one while
// it runs. When it took, the live generations are recorded as proved.
// When it did not, every file of proxy that changed since the last proved
// generation is put back to exactly that one (the render that failed is
// refused until its bytes change), and load runs once more. A load that
// found nothing to load (NotRunning) changes nothing.
func (p *Pipeline) Load(proxy string, load func(Change) error) Loaded {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	err := load(p.change(proxy))
	if err == nil || isNotRunning(err) {
		if cerr := p.checkUnchecked(proxy); cerr != nil {
			err = cerr // the proxy runs what it rejects in a file: go back
		}
	}
	if err == nil {
		p.proved(proxy)
		return Loaded{}
	}
	if isNotRunning(err) {
		return Loaded{Err: err}
	}
	out := Loaded{Err: err}
	out.Restored, out.RollbackErr = p.rollback(proxy, err)
	if len(out.Restored) > 0 {
		if out.RetryErr = load(Change{}); out.RetryErr == nil {
			p.proved(proxy)
		}
	}
	return out
}

// checkUnchecked validates the live files of proxy that went in without
// validation (Target.RuntimeOnly), now that the change is applied: a
// rejected one is refused like any render, and Load rolls it back.
func (p *Pipeline) checkUnchecked(proxy string) error {
	var errs []error
	for _, d := range p.Destinations(proxy) {
		t, f := p.targets[d], p.files[d]
		if f.unchecked == 0 || f.unchecked != f.live {
			continue
		}
		f.unchecked = 0
		err := p.validateLive(t)
		if err != nil {
			errs = append(errs, fmt.Errorf("applied at runtime, then rejected by the proxy's validation: %w", err))
		}
	}
	return errors.Join(errs...)
}

// validateLive validates a copy of t's live file staged next to it, as
// every render is validated (a validator that checks a file in place of
// the live one needs them apart).
func (p *Pipeline) validateLive(t *Target) error {
	b, err := os.ReadFile(t.Dest)
	if err != nil {
		return writeError{err}
	}
	// The change is served already: the proxy's workers come first.
	s, took, err := stageValidated(prio.Background(p.ctx), t, b, 0, p.timeout)
	p.observeValidate(t, took, err)
	if err != nil {
		return err
	}
	s.discard()
	return nil
}

// change reads the running and live bytes of proxy's files. A file that
// cannot be read is left out of both: the proxy then sees a change it
// cannot apply at runtime, and reloads.
func (p *Pipeline) change(proxy string) Change {
	ch := Change{Running: map[string][]byte{}, Live: map[string][]byte{}}
	for _, d := range p.Destinations(proxy) {
		f := p.files[d]
		live, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		ch.Live[d] = live
		if f.verified == 0 {
			continue
		}
		if f.verified == f.live {
			ch.Running[d] = live
		} else if b, err := readGeneration(d, f.verified); err == nil {
			ch.Running[d] = b
		}
	}
	return ch
}

func (p *Pipeline) proved(proxy string) {
	for _, d := range p.Destinations(proxy) {
		if f := p.files[d]; f.live != 0 {
			f.verified = f.live
		}
	}
}

func (p *Pipeline) rollback(proxy string, cause error) ([]string, error) {
	var restored []string
	var errs []error
	for _, d := range p.Destinations(proxy) {
		t, f := p.targets[d], p.files[d]
		if f.verified == 0 || f.live == f.verified {
			continue // nothing newer than what served, or nothing proved
		}
		cur, err := os.ReadFile(d)
		if err == nil {
			err = restoreGeneration(d, f.verified, t.Owner)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("rollback %s to generation %d: %w", d, f.verified, err))
			continue
		}
		f.refused, f.hasRefused = sha256.Sum256(cur), true
		f.live = f.verified
		restored = append(restored, d)
		p.rec.Failed(d, status.KindRollback, cause)
		p.log.Warn("rolled back to the last generation a reload proved", "template", t.Template,
			"dest", d, "proxy", proxy, "generation", f.verified)
	}
	return restored, errors.Join(errs...)
}

// isNotRunning recognises a reloader's "nothing to reload" error: any
// error in the chain with a NotRunning() bool method returning true.
func isNotRunning(err error) bool {
	var nr interface{ NotRunning() bool }
	return errors.As(err, &nr) && nr.NotRunning()
}
