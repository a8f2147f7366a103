package policy

import "time"

// Outage decides when to rebuild the consul-template runner after Consul
// errors. consul-template's watches keep the X-Consul-Index of their last
// answer across errors; a Consul that comes back with its data wiped (an
// agent restart, a rebuilt cluster) has lower indexes and holds such a
// query for the whole blocking wait (60 s) before the view resets: the
// renderer would be blind for a minute. A rebuilt runner starts every
// watch at index 0, which Consul answers at once; unchanged output is a
// no-op downstream and an emptied catalog is held by the stale guard, so a
// rebuild is safe, just not free. Hence: only after errors, only for a
// runner that has had data (one that never rendered is at index 0
// already), only once Consul answers a probe, and never more often than a
// gap that doubles while errors keep coming back (a query Consul always
// refuses must not rebuild in a loop) and starts over after a quiet while.
type Outage struct {
	FirstGap time.Duration // first minimum gap between two outage rebuilds

	since       time.Time // first error of the current outage; zero: none
	lastErr     time.Time
	lastRebuild time.Time
	gap         time.Duration
	probeDelay  time.Duration
	probing     bool
}

// Tunables of outage recovery.
const (
	ProbeFirst   = 250 * time.Millisecond // first re-probe after a failed one
	ProbeMax     = 2 * time.Second        // a leader probe is cheap: at least this often
	OutageGapCap = 5 * time.Minute
	OutageQuiet  = time.Minute // no error for this long: the gap starts over
)

// NewOutage returns the machine; firstGap is also the gap after a quiet
// minute.
func NewOutage(firstGap time.Duration) *Outage {
	return &Outage{FirstGap: firstGap, gap: firstGap}
}

// Since is when the current outage began; zero when there is none.
func (o *Outage) Since() time.Time { return o.since }

// ConsulError records a Consul error seen by the runner at now. It reports
// whether a probe should start now.
func (o *Outage) ConsulError(now time.Time, hadData bool) (probe bool) {
	quietSince := o.lastErr
	if o.lastRebuild.After(quietSince) {
		quietSince = o.lastRebuild
	}
	if !quietSince.IsZero() && now.Sub(quietSince) > OutageQuiet {
		o.gap = o.FirstGap
	}
	o.lastErr = now
	if !o.since.IsZero() || !hadData {
		return false
	}
	o.since = now
	o.probeDelay = ProbeFirst
	return o.startProbe()
}

// ProbeDue is the probe timer firing: it reports whether to probe now.
func (o *Outage) ProbeDue() bool {
	if o.since.IsZero() {
		return false
	}
	return o.startProbe()
}

func (o *Outage) startProbe() bool {
	if o.probing {
		return false
	}
	o.probing = true
	return true
}

// Step is the answer to a probe result: rebuild the runner now, or probe
// again after ProbeIn (0: no probe scheduled).
type Step struct {
	Rebuild bool
	Outage  time.Duration // with Rebuild: how long Consul was away
	ProbeIn time.Duration
}

// ProbeAnswered records the probe's answer (nil: Consul answers and has a
// leader) at now. hadData says whether the current runner still has data
// worth recovering (false after it died: its replacement starts at 0).
func (o *Outage) ProbeAnswered(now time.Time, err error, hadData bool) Step {
	o.probing = false
	if o.since.IsZero() {
		return Step{}
	}
	if !hadData {
		o.since = time.Time{}
		return Step{}
	}
	if err != nil {
		in := o.probeDelay
		o.probeDelay = min(2*o.probeDelay, ProbeMax)
		return Step{ProbeIn: in}
	}
	if due := o.lastRebuild.Add(o.gap); !o.lastRebuild.IsZero() && now.Before(due) {
		// Too soon after the last one: ask again when allowed; Consul
		// may be down again by then.
		return Step{ProbeIn: due.Sub(now)}
	}
	out := now.Sub(o.since)
	o.since = time.Time{}
	o.lastRebuild = now
	o.gap = min(2*o.gap, OutageGapCap)
	return Step{Rebuild: true, Outage: out}
}

// RunnerReplaced forgets the current outage: a runner rebuilt for any
// reason starts its watches at index 0.
func (o *Outage) RunnerReplaced() { o.since = time.Time{} }
