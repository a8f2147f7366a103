package mirror

import (
	"context"
	"net/url"
	"strings"
	"time"
)

const (
	// refreshTimeout bounds one refresh fetch.
	refreshTimeout = 30 * time.Second
	// sweepIdle: an answer nobody asked for this long (longer than the
	// longest blocking query) is dropped.
	sweepIdle = 15 * time.Minute
)

// refresher fetches queued answers again, fetchSlots at a time. A failed
// refresh is queued again after a pause: a change noticed once is never
// lost to a transient error.
func (m *Mirror) refresher(ctx context.Context) {
	for {
		rt, ok := m.store.next()
		if !ok {
			if d, ok := m.store.drained(time.Now()); ok {
				m.met.sync.Observe(d.Seconds())
			}
			select {
			case <-ctx.Done():
				return
			case <-m.store.kick:
				continue
			}
		}
		// Let a sibling take the rest of the queue meanwhile.
		if m.store.pending() > 0 {
			select {
			case m.store.kick <- struct{}{}:
			default:
			}
		}
		err := m.refresh(ctx, rt)
		m.store.refreshed()
		if err != nil && ctx.Err() == nil {
			m.o.Log.Debug("consul mirror: refresh failed; retrying", "key", rt.key, "err", err)
			m.retryLater(ctx, rt)
		}
	}
}

func (m *Mirror) refresh(ctx context.Context, rt route) error {
	ctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	r, err := m.up.fetch(ctx, rt.endpoint, consistentQuery(rt.key))
	if err != nil {
		return err
	}
	m.store.update(rt.key, r)
	return nil
}

// consistentQuery drops "stale" from a refresh: the watch saw the change
// on the leader, and a follower that has not applied it yet would answer
// the old bytes, with nothing left to say the answer is behind.
func consistentQuery(key string) string {
	p, q, ok := strings.Cut(key, "?")
	if !ok {
		return key
	}
	v, err := url.ParseQuery(q)
	if err != nil || !v.Has("stale") {
		return key
	}
	v.Del("stale")
	if enc := v.Encode(); enc != "" {
		return p + "?" + enc
	}
	return p
}

// retryLater queues rt again after MinBackoff. The refresher itself
// waits: during an outage that paces the refreshes instead of spinning.
func (m *Mirror) retryLater(ctx context.Context, rt route) {
	if !sleepCtx(ctx, m.o.MinBackoff) {
		return
	}
	m.store.mu.Lock()
	if e := m.store.entries[rt.key]; e != nil {
		m.store.markLocked(e)
	}
	m.store.mu.Unlock()
}

// housekeeping polls the answers no watch covers and drops unused ones.
func (m *Mirror) housekeeping(ctx context.Context) {
	poll := time.NewTicker(m.o.PollEvery)
	defer poll.Stop()
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
			m.store.markKind(kindPoll)
		case now := <-sweep.C:
			m.store.sweep(now, sweepIdle)
			m.met.entries.Set(float64(m.store.count()))
		}
	}
}
