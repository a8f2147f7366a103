package mirror

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	// Consul's own bounds of a blocking query's wait: 5 min by default,
	// 10 min at most, plus up to 1/16 of random jitter so that watches
	// started together do not come back together.
	defaultWait = 5 * time.Minute
	maxWait     = 10 * time.Minute
	passTimeout = 10 * time.Second
)

// ServeHTTP answers one consul-template request.
func (m *Mirror) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !m.allowed(r) {
		http.Error(w, "ACL not found", http.StatusForbidden)
		return
	}
	if id, ok := strings.CutPrefix(r.URL.Path, "/v1/kv/"+inlineKeyPrefix); ok {
		m.serveInlineKey(w, r, id)
		return
	}
	rt := classify(r)
	if rt.kind == kindPass {
		m.pass(w, r)
		return
	}
	idx, wait, err := blockingParams(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	m.met.served.WithLabelValues(rt.endpoint, strconv.FormatBool(idx > 0)).Inc()
	e := m.entryOrAnswer(w, r, rt, false)
	if e == nil {
		return
	}
	if idx > 0 {
		if err := m.block(r.Context(), e, idx, wait); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	resp, cur := m.store.snapshot(e)
	write(w, resp, cur)
}

// entryOrAnswer is the entry a request reads, once the mirror has read
// Consul; nil when it answered the request itself: an error, or an
// answer not kept (4xx). now: a first fetch is answered at once, not
// held for a burst (releaseFirst).
func (m *Mirror) entryOrAnswer(w http.ResponseWriter, r *http.Request, rt route, now bool) *entry {
	if err := m.awaitSync(r.Context()); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return nil
	}
	e, pass, err := m.entry(r.Context(), rt, now)
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return nil
	case pass != nil:
		write(w, pass, max(pass.index, 1))
		return nil
	}
	return e
}

// block waits until the entry's index passes idx, the wait (plus
// jitter) elapses, the upstream fails or the client goes. A failing
// upstream answers blocking queries with its error, as a dying agent
// breaks them: consul-template keeps its data, and the renderer's
// outage handling sees the error. An index from the future (a client
// that outlived another mirror) is answered at once, so it resets.
func (m *Mirror) block(ctx context.Context, e *entry, idx uint64, wait time.Duration) error {
	upErr, broken := m.health.state()
	if upErr != nil {
		return upErr
	}
	ch, cur, done := m.store.wait(e)
	defer done()
	if cur > idx || idx > m.store.current() {
		return nil
	}
	m.met.waiting.Inc()
	defer m.met.waiting.Dec()
	t := time.NewTimer(wait + rand.N(wait/16+1))
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	case <-broken:
		err, _ := m.health.state()
		if err == nil {
			err = errors.New("consul mirror: upstream consul failed")
		}
		return err
	}
	return nil
}

// allowed checks the request's token against the secret, in constant
// time, as consul/api sends it (header, or the token parameter).
func (m *Mirror) allowed(r *http.Request) bool {
	if m.o.Secret == "" {
		return true
	}
	tok := r.Header.Get("X-Consul-Token")
	if tok == "" {
		tok = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	return subtle.ConstantTimeCompare([]byte(tok), []byte(m.o.Secret)) == 1
}

func blockingParams(r *http.Request) (uint64, time.Duration, error) {
	q := r.URL.Query()
	var idx uint64
	if s := q.Get("index"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("invalid index %q", s)
		}
		idx = v
	}
	wait := defaultWait
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, 0, fmt.Errorf("invalid wait %q", s)
		}
		if d > 0 {
			wait = min(d, maxWait)
		}
	}
	return idx, wait, nil
}

// awaitSync holds a request until the first dump was read: before it the
// mirror cannot tell a change from the state it fetched, and it never
// answers with a catalog it did not read.
func (m *Mirror) awaitSync(ctx context.Context) error {
	if m.health.isSynced() {
		return nil
	}
	t := time.NewTimer(m.o.FirstSyncWait)
	defer t.Stop()
	select {
	case <-m.health.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		err, _ := m.health.state()
		if err == nil {
			return errors.New("consul mirror: no answer from consul yet")
		}
		return fmt.Errorf("consul mirror: no answer from consul yet: %w", err)
	}
}

// entry returns the cached answer for rt, fetching it first when nobody
// asked for it yet (one fetch per key however many ask). A 4xx other than
// KV's 404 is not kept: it is passed on as it is (pass).
func (m *Mirror) entry(ctx context.Context, rt route, now bool) (*entry, *response, error) {
	if e := m.store.lookup(rt.key, time.Now()); e != nil {
		return e, nil, nil
	}
	if rt.kind == kindKV {
		m.kvOnce.Do(func() { close(m.kvStart) })
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, nil, errors.New("consul mirror: stopped")
	}
	c := m.inflight[rt.key]
	if c == nil {
		c = &call{done: make(chan struct{}), now: now}
		m.inflight[rt.key] = c
		m.fetches.Add(1)
		go m.firstFetch(rt, c)
	}
	m.mu.Unlock()
	select {
	case <-c.done:
		return c.e, c.resp, c.err
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// firstFetch runs apart from the request that started it, so a client
// that gives up does not fail the others waiting on the same key.
func (m *Mirror) firstFetch(rt route, c *call) {
	defer func() {
		m.releaseFirst(rt.key, c)
		m.fetches.Done()
	}()
	gen := m.store.gens()
	ctx, cancel := context.WithTimeout(m.ctx, refreshTimeout)
	defer cancel()
	r, err := m.up.fetch(ctx, rt.endpoint, rt.key)
	switch {
	case err != nil:
		c.err = err
	case r.status == http.StatusOK || (rt.kind == kindKV && r.status == http.StatusNotFound):
		c.e = m.store.insert(rt, r, gen, time.Now())
		m.met.entries.Set(float64(m.store.count()))
	default:
		c.resp = r
	}
}

// maxFirstHold bounds how long a first answer waits for the others
// fetched with it.
const maxFirstHold = time.Second

// releaseFirst answers the requests waiting for c's first fetch when no
// other first fetch is in flight, all the answers held so far at once,
// else at the latest maxFirstHold after the oldest was held. A runner's
// first pass asks for every service at once; answered one by one, as the
// two fetch slots get them, consul-template ran its template again for
// each small batch (21 runs of about 0.1 s for the first render at 1,000
// services). Answered together, it runs once. A lone first fetch (one
// new service) is answered at once.
func (m *Mirror) releaseFirst(key string, c *call) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.inflight, key)
	if c.now {
		close(c.done)
	} else {
		m.held = append(m.held, c)
	}
	if len(m.inflight) > 0 {
		if len(m.held) > 0 && m.heldT == nil {
			m.heldT = time.AfterFunc(maxFirstHold, m.releaseHeld)
		}
		return
	}
	m.answerHeldLocked()
}

func (m *Mirror) releaseHeld() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.answerHeldLocked()
}

func (m *Mirror) answerHeldLocked() {
	if m.heldT != nil {
		m.heldT.Stop()
		m.heldT = nil
	}
	for _, c := range m.held {
		close(c.done)
	}
	m.held = nil
}

// pass forwards a request the mirror does not keep (status, writes). The
// leader status, which the renderer's probe reads, fails while the
// mirror's own watches fail: "the probe answers" must mean "the mirror
// can answer the runner".
func (m *Mirror) pass(w http.ResponseWriter, r *http.Request) {
	m.met.served.WithLabelValues("passthrough", "false").Inc()
	if r.URL.Path == "/v1/status/leader" {
		if err, _ := m.health.state(); err != nil || !m.health.isSynced() {
			if err == nil {
				err = errors.New("consul mirror: no answer from consul yet")
			}
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), passTimeout)
	defer cancel()
	select {
	case m.up.slots <- struct{}{}:
	case <-ctx.Done():
		http.Error(w, ctx.Err().Error(), http.StatusServiceUnavailable)
		return
	}
	defer func() { <-m.up.slots }()
	hdr := http.Header{}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		hdr.Set("Content-Type", ct)
	}
	resp, err := m.up.do(ctx, r.Method, "passthrough", r.URL.RequestURI(), io.LimitReader(r.Body, maxBody), hdr)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	write(w, resp, resp.index)
}

func write(w http.ResponseWriter, r *response, idx uint64) {
	h := w.Header()
	for k, v := range r.header {
		h[k] = v
	}
	if idx > 0 {
		h.Set("X-Consul-Index", strconv.FormatUint(idx, 10))
	}
	w.WriteHeader(r.status)
	_, _ = w.Write(r.body)
}
