package mirror

import (
	"sync"
	"time"
)

// health is whether the mirror's view of Consul is current: synced once
// the catalog dump was read, failing while any upstream watch fails.
type health struct {
	mu     sync.Mutex
	synced chan struct{} // closed at the first dump read
	errs   map[string]error
	// broken is closed when a watch starts failing, so blocking queries
	// answer with the error at once, as a dying agent breaks them.
	broken chan struct{}
	since  time.Time
}

func newHealth() *health {
	return &health{synced: make(chan struct{}), errs: map[string]error{}, broken: make(chan struct{})}
}

// fail records watch's error; the first failure wakes every waiter.
func (h *health) fail(watch string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.errs) == 0 {
		close(h.broken)
		h.since = time.Now()
	}
	h.errs[watch] = err
}

// ok records that watch answered; the last one to recover re-arms broken.
func (h *health) ok(watch string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, was := h.errs[watch]; !was {
		return
	}
	delete(h.errs, watch)
	if len(h.errs) == 0 {
		h.broken = make(chan struct{})
	}
}

func (h *health) markSynced() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.synced:
	default:
		close(h.synced)
	}
}

// state is the current error (nil when healthy) and the channel closed on
// the next failure.
func (h *health) state() (error, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range []string{watchDump, watchKV} {
		if err := h.errs[w]; err != nil {
			return err, h.broken
		}
	}
	return nil, h.broken
}

func (h *health) isSynced() bool {
	select {
	case <-h.synced:
		return true
	default:
		return false
	}
}
