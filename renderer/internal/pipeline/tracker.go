package pipeline

import (
	"slices"
	"sync"
)

// tracker is the little state the supervisor's loop reads after every
// render, behind a mutex of its own so the loop never waits for a
// validation in progress: which templates have been accepted or at least
// tried, and which proxies have swapped files they have not loaded yet.
type tracker struct {
	mu        sync.Mutex
	accepted  map[string]bool // dest -> a render went live or equals the live file
	attempted map[string]bool // dest -> a render was accepted or refused
	changed   map[string]bool // proxies with swapped files since TakeChanged
	notify    chan struct{}
}

func newTracker(dests []string) *tracker {
	t := &tracker{accepted: map[string]bool{}, attempted: map[string]bool{},
		changed: map[string]bool{}, notify: make(chan struct{}, 1)}
	for _, d := range dests {
		t.accepted[d], t.attempted[d] = false, false
	}
	return t
}

// Notify receives a value whenever a render was accepted, swapped or
// refused; the loop then reads TakeChanged and Complete.
func (t *tracker) Notify() <-chan struct{} { return t.notify }

func (t *tracker) signal() {
	select {
	case t.notify <- struct{}{}:
	default:
	}
}

// TakeChanged returns, sorted, the proxies whose files changed since the
// last call, and forgets them.
func (t *tracker) TakeChanged() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.changed))
	for k := range t.changed {
		out = append(out, k)
	}
	clear(t.changed)
	slices.Sort(out)
	return out
}

// Complete reports whether every template has had a render accepted: only
// then may a proxy start or reload.
func (t *tracker) Complete() bool { return t.all(t.accepted) }

// Attempted reports whether every template has been rendered at least
// once, accepted or not (renderer once).
func (t *tracker) Attempted() bool { return t.all(t.attempted) }

func (t *tracker) all(m map[string]bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ok := range m {
		if !ok {
			return false
		}
	}
	return true
}

// accept records an accepted render of dest; proxy "" loads nothing.
func (t *tracker) accept(dest, proxy string, swapped bool) {
	t.mu.Lock()
	first := !t.accepted[dest]
	t.accepted[dest], t.attempted[dest] = true, true
	if swapped && proxy != "" {
		t.changed[proxy] = true
	}
	t.mu.Unlock()
	if swapped || first {
		t.signal()
	}
}

// refuse records a render of dest that did not go live.
func (t *tracker) refuse(dest string) {
	t.mu.Lock()
	t.attempted[dest] = true
	t.mu.Unlock()
	t.signal()
}
