package mirror

import (
	"bytes"
	"sync"
	"time"
)

// entry is one cached answer and the blocking queries waiting on it.
type entry struct {
	rt    route
	resp  *response
	index uint64 // the mirror's index: moves only when resp's bytes change
	// changed is closed (and replaced) when the answer changes: every
	// blocking query on the entry wakes.
	changed  chan struct{}
	lastUsed time.Time
	waiters  int
	queued   bool // in the refresh queue
}

// store holds the entries. Its index is the mirror's own: one counter,
// starting at 1, bumped on every change of any entry. So an index only
// ever moves forward whatever the agent does (a restart, a snapshot
// restore), and "index unchanged" means "bytes unchanged".
type store struct {
	mu      sync.Mutex
	seq     uint64
	entries map[string]*entry
	// gen counts change notices from the watches; changedAt[class] is
	// the gen of the last notice that touched the class. An entry whose
	// first fetch started before a notice of its class may have read the
	// state before the change: it is refreshed once more.
	gen       uint64
	changedAt map[string]uint64
	// queue: keys due a refresh, in order; kick wakes the refreshers.
	queue []string
	kick  chan struct{}
	// inflight refreshes; noticeAt is when the oldest notice not yet
	// fully refreshed arrived (zero: none), for the sync latency metric.
	inflight int
	noticeAt time.Time
	// tracked counts the inline sessions reading each key (Inline): such
	// an entry is kept fresh and never swept, though no request waits on
	// it, and its changes move inlineGen and close inlineCh.
	tracked   map[string]int
	inlineGen uint64
	inlineCh  chan struct{}
}

func newStore() *store {
	return &store{seq: 1, entries: map[string]*entry{}, changedAt: map[string]uint64{}, kick: make(chan struct{}, 1),
		tracked: map[string]int{}, inlineGen: 1, inlineCh: make(chan struct{})}
}

// class is what a change notice names: a service, the catalog, KV.
func class(rt route) string {
	switch rt.kind {
	case kindService:
		return "svc:" + rt.service
	case kindCatalog:
		return "catalog"
	case kindKV:
		return "kv"
	}
	return "poll"
}

// lookup returns the entry for key, marking it used.
func (s *store) lookup(key string, now time.Time) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[key]
	if e != nil {
		e.lastUsed = now
	}
	return e
}

// gens is the current notice generation, read before a first fetch.
func (s *store) gens() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// insert adds a first answer fetched when the generation was startGen, or
// updates the entry another request inserted meanwhile.
func (s *store) insert(rt route, r *response, startGen uint64, now time.Time) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[rt.key]
	if e == nil {
		s.seq++
		e = &entry{rt: rt, resp: r, index: s.seq, changed: make(chan struct{}), lastUsed: now}
		s.entries[rt.key] = e
	} else {
		s.updateLocked(e, r)
	}
	if s.changedAt[class(rt)] > startGen {
		s.markLocked(e)
	}
	return e
}

// update stores a refreshed answer; it reports whether the bytes changed.
func (s *store) update(key string, r *response) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[key]
	if e == nil {
		return false
	}
	return s.updateLocked(e, r)
}

func (s *store) updateLocked(e *entry, r *response) bool {
	if e.resp != nil && e.resp.status == r.status && bytes.Equal(e.resp.body, r.body) {
		e.resp = r // same bytes, fresher headers (last contact, known leader)
		return false
	}
	s.seq++
	e.resp, e.index = r, s.seq
	close(e.changed)
	e.changed = make(chan struct{})
	if s.tracked[e.rt.key] > 0 {
		s.inlineGen++
		close(s.inlineCh)
		s.inlineCh = make(chan struct{})
	}
	return true
}

// track marks keys as read by an inline session (untrack undoes it).
func (s *store) track(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tracked[key]++
}

func (s *store) untrack(keys []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		if s.tracked[k]--; s.tracked[k] <= 0 {
			delete(s.tracked, k)
		}
	}
}

// inline is the generation of the tracked entries and the channel closed
// when it next moves.
func (s *store) inline() (uint64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inlineGen, s.inlineCh
}

// indexOf is the index of key's answer (false: none kept).
func (s *store) indexOf(key string) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[key]; e != nil {
		return e.index, true
	}
	return 0, false
}

// notice records a change of the given classes (nil: every entry of the
// kinds listed) and queues the entries concerned.
func (s *store) notice(classes []string, kinds ...kind) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	if s.noticeAt.IsZero() {
		s.noticeAt = time.Now()
	}
	for _, c := range classes {
		s.changedAt[c] = s.gen
	}
	for _, k := range kinds {
		s.changedAt[class(route{kind: k})] = s.gen
	}
	want := map[string]bool{}
	for _, c := range classes {
		want[c] = true
	}
	for _, e := range s.entries {
		hit := want[class(e.rt)]
		for _, k := range kinds {
			hit = hit || e.rt.kind == k
		}
		if hit {
			s.markLocked(e)
		}
	}
}

func (s *store) markLocked(e *entry) {
	if !e.queued {
		e.queued = true
		s.queue = append(s.queue, e.rt.key)
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// next pops an answer due a refresh and clears its mark (false when
// none): a notice arriving during the fetch marks it again.
func (s *store) next() (route, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) > 0 {
		key := s.queue[0]
		s.queue = s.queue[1:]
		if e := s.entries[key]; e != nil {
			e.queued = false
			s.inflight++
			return e.rt, true
		}
	}
	return route{}, false
}

// refreshed ends a refresh that next handed out.
func (s *store) refreshed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
}

// drained reports, once per notice batch, how long ago the oldest notice
// arrived when every refresh it caused is done.
func (s *store) drained(now time.Time) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) > 0 || s.inflight > 0 || s.noticeAt.IsZero() {
		return 0, false
	}
	d := now.Sub(s.noticeAt)
	s.noticeAt = time.Time{}
	return d, true
}

// pending is the number of refreshes queued.
func (s *store) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// wait registers a blocking query on key; done unregisters it.
func (s *store) wait(e *entry) (ch <-chan struct{}, idx uint64, done func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e.waiters++
	return e.changed, e.index, func() {
		s.mu.Lock()
		e.waiters--
		e.lastUsed = time.Now()
		s.mu.Unlock()
	}
}

// snapshot is the entry's answer and index, read under the lock.
func (s *store) snapshot(e *entry) (*response, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return e.resp, e.index
}

// current is the mirror's latest index.
func (s *store) current() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// sweep drops entries nobody asked for within idle and nobody waits on:
// a template edit leaves answers it no longer reads.
func (s *store) sweep(now time.Time, idle time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, e := range s.entries {
		if e.waiters == 0 && s.tracked[k] == 0 && now.Sub(e.lastUsed) > idle {
			delete(s.entries, k)
			n++
		}
	}
	return n
}

// markKind queues every entry of kind k (poll refreshes).
func (s *store) markKind(k kind) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.entries {
		if e.rt.kind == k && (e.waiters > 0 || s.tracked[e.rt.key] > 0 || k != kindPoll) {
			s.markLocked(e)
			n++
		}
	}
	return n
}

// count is the number of entries (metrics).
func (s *store) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}
