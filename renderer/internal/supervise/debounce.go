package supervise

import "time"

// debouncer batches changes into one reload: it fires min after the last
// change, but no later than max after the first one of the batch (so a
// steady stream of changes still reloads), and never sooner than gap after
// the previous fire (so reloads cannot storm).
//
// A batch that starts after a quiet period (no change for at least min)
// is a leading edge: it fires as soon as flush says the runner has finished
// the pass that produced it, instead of waiting min. An isolated catalog
// change then costs no debounce delay at all, while a burst still costs
// one reload for its first pass and batched reloads for the rest.
type debouncer struct {
	min, max, gap time.Duration

	pending     bool
	leading     bool // the batch started after a quiet period
	flushed     bool // the batch is due now (leading and flushed)
	first, last time.Time
	lastFire    time.Time
	timer       *time.Timer
}

func newDebouncer(min, max, gap time.Duration) *debouncer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &debouncer{min: min, max: max, gap: gap, timer: t}
}

// add records a change at now and rearms the timer.
func (d *debouncer) add(now time.Time) {
	if !d.pending {
		d.pending = true
		d.first = now
		// d.last still holds the last change of the previous batch.
		d.leading = d.last.IsZero() || now.Sub(d.last) >= d.min
		d.flushed = false
	}
	d.last = now
	d.arm(now)
}

// flush says the runner finished a pass over every template: when the
// pending batch is a leading edge, nothing more belongs to it, so it fires
// now (subject to gap) rather than min after its last change.
func (d *debouncer) flush(now time.Time) {
	if d.pending && d.leading {
		d.flushed = true
		d.arm(now)
	}
}

func (d *debouncer) arm(now time.Time) {
	at := d.last.Add(d.min)
	if d.flushed {
		at = now
	}
	if d.max > 0 {
		if cap := d.first.Add(d.max); cap.Before(at) {
			at = cap
		}
	}
	if !d.lastFire.IsZero() {
		if g := d.lastFire.Add(d.gap); g.After(at) {
			at = g
		}
	}
	d.timer.Reset(max(at.Sub(now), 0))
}

// C fires when the batch is due.
func (d *debouncer) C() <-chan time.Time { return d.timer.C }

// fired must be called after C delivered: it closes the batch.
func (d *debouncer) fired(now time.Time) {
	d.pending = false
	d.flushed = false
	d.lastFire = now
}

func (d *debouncer) stop() { d.timer.Stop() }
