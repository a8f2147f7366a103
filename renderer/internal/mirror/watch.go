package mirror

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

const (
	watchDump = "dump"
	watchKV   = "kv"
	// dumpPath is Consul's node dump: nodes, services, checks of the
	// local datacenter in one answer, blocking on all three tables. The
	// watches read stale, as consul-template does by default, so a leader
	// election does not fail them; the refreshes they trigger read from
	// the leader, which has whatever any follower has.
	dumpPath = "/v1/internal/ui/nodes?stale="
	// kvPath lists the top-level keys only, but blocks on the whole KV
	// store (and its tombstones): any write or delete moves its index.
	kvPath = "/v1/kv/?keys=&separator=%2F&stale="
	// minGap spaces a watch's requests: a burst of writes is read as one
	// dump, and an agent that answered at once forever would not make a
	// busy loop. One change alone is not delayed (its wait was longer).
	minGap = 50 * time.Millisecond
	// dumpCostFactor: under a stream of changes, the dump watch spaces its
	// reads by this many times what decoding the last dump took (about
	// what encoding it cost Consul), so a large catalog with frequent
	// changes costs Consul at most about 1/factor of a core.
	dumpCostFactor = 4
	// churnQuiet and maxChurnGap: while the dump watch's answers come
	// back within churnQuiet of asking (changes keep coming), it doubles
	// the time between its reads, up to maxChurnGap; one answer that
	// waited longer (a quiet spell) resets it. Under a change every 200
	// ms, a dump per change cost Consul 1.6 times the CPU that
	// consul-template's per-service queries cost it (at 100 services;
	// 3.9 times at 1,000); a change that comes alone is still read at
	// once. maxChurnGap matches the renderer's default reload debounce
	// (--wait 20ms:1s): a stream of changes reloads a proxy at most that
	// often anyway.
	churnQuiet  = time.Second
	maxChurnGap = time.Second
)

// churnGap is the next least time between two reads of a watch that
// backs off under churn, given the last one and how long the last
// request waited for its answer.
func churnGap(last, waited time.Duration) time.Duration {
	if waited >= churnQuiet {
		return 0
	}
	return min(maxChurnGap, max(minGap, 2*last))
}

// jittered spreads a churn gap by up to an eighth either way, at random
// (the mean stays, and so does what the reads cost Consul). Reads spaced
// by a fixed period alias with a flap whose period divides it: a service
// registered and deregistered every 20 ms was read in the same state at
// every read 200 ms, 400 ms, ... 1 s apart, so the mirror never saw it
// change while it did (a CI failure of TestRendererKillDuringSwap;
// TestDumpWatchSeesAFlapThatDividesItsGap).
func jittered(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - d/8 + rand.N(d/4+1)
}

// watch is one upstream blocking query with a connection of its own.
type watch struct {
	name, path string
	// answer handles a 200 (or a KV 404): idxMoved is false when the
	// wait merely timed out; recovered is true on the first answer after
	// a failure (or the first ever).
	answer func(r *response, idxMoved, recovered bool) error
	// gap is the least time between two requests' starts.
	gap func() time.Duration
	// churn: the watch backs off while changes keep coming (churnGap).
	churn bool
}

func (m *Mirror) runWatch(ctx context.Context, w watch) {
	var idx uint64
	var churn time.Duration
	backoff := m.o.MinBackoff
	recovered := true
	for ctx.Err() == nil {
		start := time.Now()
		r, err := m.blockOnce(ctx, w, idx)
		if w.churn && err == nil && idx > 0 {
			churn = churnGap(churn, time.Since(start))
		}
		if err == nil {
			err = w.answer(r, r.index != idx, recovered)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.health.fail(w.name, err)
			// One line per outage: the supervisor reports the errors
			// consul-template sees, at most one line a second.
			logf := m.o.Log.Debug
			if !recovered {
				logf = m.o.Log.Warn
			}
			logf("consul mirror: upstream watch failed; serving last-known data, blocking queries answer errors", "watch", w.name, "err", err, "retry_in", backoff)
			idx, recovered = 0, true
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, m.o.MaxBackoff)
			continue
		}
		m.health.ok(w.name)
		backoff, recovered = m.o.MinBackoff, false
		// An index that went backwards (agent restarted, snapshot
		// restored) was read in full all the same: block on the new one.
		idx = max(r.index, 1)
		gap := max(minGap, jittered(churn))
		if w.gap != nil {
			gap = max(gap, w.gap())
		}
		if !sleepCtx(ctx, gap-time.Since(start)) {
			return
		}
	}
}

// blockOnce asks once: at once when idx is 0, else blocking until the
// index passes idx or UpstreamWait elapses.
func (m *Mirror) blockOnce(ctx context.Context, w watch, idx uint64) (*response, error) {
	ctx, cancel := context.WithTimeout(ctx, m.o.UpstreamWait+m.o.UpstreamWait/16+30*time.Second)
	defer cancel()
	q := w.path
	if idx > 0 {
		sep := "?"
		if containsByte(q, '?') {
			sep = "&"
		}
		q += sep + "index=" + strconv.FormatUint(idx, 10) + "&wait=" + strconv.FormatInt(m.o.UpstreamWait.Milliseconds(), 10) + "ms"
	}
	r, err := m.up.get(ctx, w.name, q)
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK && !(w.name == watchKV && r.status == http.StatusNotFound) {
		return nil, &errUpstream{msg: fmt.Sprintf("upstream consul: %s: %d %s", w.path, r.status, firstLine(r.body))}
	}
	return r, nil
}

// onDump diffs the dump against the last one read and queues the answers
// of every service that changed. The last dump survives failures, so the
// first one after an outage finds what changed during it.
func (m *Mirror) onDump(r *response, idxMoved, recovered bool) error {
	if !idxMoved && !recovered {
		return nil
	}
	t0 := time.Now()
	fp, err := parseDump(r.body, m.prev)
	if err != nil {
		return err
	}
	m.dumpCost.Store(int64(time.Since(t0)))
	if m.prev.svc != nil {
		changed, any := diff(m.prev, fp)
		if any {
			classes := make([]string, len(changed))
			for i, s := range changed {
				classes[i] = "svc:" + s
			}
			m.store.notice(classes, kindCatalog)
		}
	}
	m.prev = fp
	m.health.markSynced()
	return nil
}

// onKV queues every KV answer when the KV store changed (or may have,
// across a failure).
func (m *Mirror) onKV(r *response, idxMoved, recovered bool) error {
	if idxMoved || recovered {
		m.store.notice(nil, kindKV)
	}
	return nil
}

func containsByte(s string, c byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return true
		}
	}
	return false
}

// sleepCtx waits d (nothing when d <= 0); false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
