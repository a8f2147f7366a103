package supervise

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// fireTimes feeds changes at the given offsets and returns when the
// debouncer fired, relative to the start.
func fireTimes(t *testing.T, d *debouncer, changes []time.Duration, until time.Duration) []time.Duration {
	return feed(d, changes, false, until)
}

// feed is fireTimes; with passEnd, every change is followed by a flush, as
// when the runner finishes a pass right after each change.
func feed(d *debouncer, changes []time.Duration, passEnd bool, until time.Duration) []time.Duration {
	var fired []time.Duration
	start := time.Now()
	i := 0
	end := time.After(until)
	for {
		var next <-chan time.Time
		if i < len(changes) {
			next = time.After(changes[i] - time.Since(start))
		}
		select {
		case <-next:
			d.add(time.Now())
			if passEnd {
				d.flush(time.Now())
			}
			i++
		case <-d.C():
			d.fired(time.Now())
			fired = append(fired, time.Since(start))
		case <-end:
			return fired
		}
	}
}

func TestDebounceQuietPeriod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDebouncer(100*time.Millisecond, time.Second, 0)
		got := fireTimes(t, d, []time.Duration{0, 50 * time.Millisecond, 90 * time.Millisecond}, 5*time.Second)
		if len(got) != 1 || got[0] != 190*time.Millisecond {
			t.Errorf("fired at %v, want [190ms]", got)
		}
	})
}

func TestDebounceMaxBoundsAStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 100 changes in 1s, one every 10ms: the quiet period never comes.
		var changes []time.Duration
		for i := range 100 {
			changes = append(changes, time.Duration(i)*10*time.Millisecond)
		}
		d := newDebouncer(100*time.Millisecond, time.Second, 0)
		got := fireTimes(t, d, changes, 5*time.Second)
		if len(got) > 3 || len(got) < 1 {
			t.Fatalf("%d reloads for a 1s burst: %v", len(got), got)
		}
		if got[0] != time.Second {
			t.Errorf("first fire at %v, want 1s (max)", got[0])
		}
	})
}

func TestDebounceMinGap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDebouncer(10*time.Millisecond, 50*time.Millisecond, time.Second)
		got := fireTimes(t, d, []time.Duration{0, 100 * time.Millisecond}, 5*time.Second)
		if len(got) != 2 || got[0] != 10*time.Millisecond || got[1] != 1010*time.Millisecond {
			t.Errorf("fired at %v, want [10ms 1.01s]", got)
		}
	})
}

func TestDebounceLeadingEdge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// An isolated change fires when its pass ends, not min later; the
		// next one, long after, too; one within min of the last change is
		// a burst and waits for min of quiet again.
		d := newDebouncer(100*time.Millisecond, time.Second, 0)
		got := feed(d, []time.Duration{0, 500 * time.Millisecond, 550 * time.Millisecond}, true, 5*time.Second)
		want := []time.Duration{0, 500 * time.Millisecond, 650 * time.Millisecond}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("fired at %v, want %v", got, want)
		}
	})
}

func TestDebounceLeadingEdgeKeepsGap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDebouncer(10*time.Millisecond, time.Second, 250*time.Millisecond)
		got := feed(d, []time.Duration{0, 100 * time.Millisecond}, true, 5*time.Second)
		want := []time.Duration{0, 250 * time.Millisecond}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("fired at %v, want %v", got, want)
		}
	})
}

func TestDebounceLeadingEdgeBurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 100 changes in 1s, each its own pass: the first reloads at once,
		// the rest are batched as without a leading edge.
		var changes []time.Duration
		for i := range 100 {
			changes = append(changes, time.Duration(i)*10*time.Millisecond)
		}
		d := newDebouncer(100*time.Millisecond, time.Second, 250*time.Millisecond)
		got := feed(d, changes, true, 5*time.Second)
		if len(got) > 3 || len(got) < 2 || got[0] != 0 {
			t.Fatalf("fired at %v, want 0 then at most 2 batched reloads", got)
		}
	})
}
