package supervise

import "time"

// debouncer batches changes into one reload: it fires min after the last
// change, but no later than max after the first one of the batch (so a
// steady stream of changes still reloads), and never sooner than gap after
// the previous fire (so reloads cannot storm).
type debouncer struct {
	min, max, gap time.Duration

	pending     bool
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
	}
	d.last = now
	d.arm(now)
}

func (d *debouncer) arm(now time.Time) {
	at := d.last.Add(d.min)
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
	d.lastFire = now
}

func (d *debouncer) stop() { d.timer.Stop() }
