package mirror

import (
	"context"
	crand "crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	ctconfig "github.com/hashicorp/consul-template/config"
	dep "github.com/hashicorp/consul-template/dependency"
)

// inlineKeyPrefix is the KV path of the keys the inline trailer reads
// (InlineKeyFunc). The mirror answers them itself; Consul never sees them.
const inlineKeyPrefix = ".switchyard-inline/"

// InlineKeyFunc is the template function the trailer calls for the name
// of the key it reads.
const InlineKeyFunc = "switchyardInlineKey"

// inlineLanes is how many fetches the inline functions run at once: two
// keep the mirror's two upstream fetch slots busy, two more overlap with
// decoding.
const inlineLanes = 4

// InlineOptions configure an inline session.
type InlineOptions struct {
	// MaxStale is consul-template's max_stale: a stale answer whose last
	// contact with the leader is older is read again from the leader.
	MaxStale time.Duration
	// Namespace is the Consul namespace consul-template's client uses.
	Namespace string
	Log       *slog.Logger
}

// Inline answers the template function service from the mirror, in
// process: consul-template's own service function registers a watched
// dependency per call, one blocking query (one goroutine, one connection
// to the mirror, two file descriptors, about 78 KB) per service, which at
// 10,000 services is 1.3 GB and more descriptors than a process may have.
// Inline's service reads the same answer with consul-template's own
// dependency code (so the data is identical), caches it by the mirror's
// index, and costs nothing per service while nothing changes.
//
// consul-template no longer sees those dependencies, so it would neither
// wait for their first answers nor run again on their changes. A trailer
// appended to every template (Trailer) reads one KV key the mirror
// answers itself: its name changes whenever a call found no answer yet,
// so that pass is incomplete (a missing dependency) until the answers are
// fetched, and its value changes whenever an answer read inline changes,
// which runs the templates again.
type Inline struct {
	m      *Mirror
	o      InlineOptions
	id     string
	ctx    context.Context
	cancel context.CancelFunc
	srv    *http.Server
	lanes  chan *lane
	all    []*lane
	wg     sync.WaitGroup
	closed sync.Once
	// failing: the last inline read failed (one WARN per streak).
	failing atomic.Bool

	mu      sync.Mutex
	cache   map[string]*inlineAnswer // by service query
	queued  map[string]bool          // queries waiting for or in a fetch
	todo    []string
	kick    chan struct{}
	epoch   uint64          // moves on every call that found no answer
	idle    chan struct{}   // closed while nothing is queued
	tracked map[string]bool // keys this session tracks in the store
}

// inlineAnswer is one service query's decoded answer and where it came
// from.
type inlineAnswer struct {
	key   string // the mirror's key of the answer
	index uint64 // the mirror's index of it
	value []*dep.HealthService
}

// lane is one fetcher: its own consul/api client, authenticated by its
// own token, so the lane server knows which key a lane asked for.
type lane struct {
	token   string
	clients *dep.ClientSet
	key     atomic.Pointer[string] // the key of the lane's last request
}

// NewInline starts an inline session: a loopback listener for its lanes,
// and the fetchers. Close ends it.
func (m *Mirror) NewInline(o InlineOptions) (*Inline, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	lanes, err := newLanes("http://"+ln.Addr().String(), o.Namespace)
	if err != nil {
		ln.Close()
		return nil, err
	}
	in := &Inline{m: m, o: o, id: randomHex(8), lanes: make(chan *lane, len(lanes)), all: lanes,
		cache: map[string]*inlineAnswer{}, queued: map[string]bool{}, kick: make(chan struct{}, 1),
		idle: make(chan struct{}), tracked: map[string]bool{}}
	close(in.idle)
	for _, l := range lanes {
		in.lanes <- l
	}
	in.ctx, in.cancel = context.WithCancel(m.ctx)
	in.srv = &http.Server{Handler: http.HandlerFunc(in.serveLane), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return in.ctx }}
	in.wg.Add(1 + len(lanes))
	go func() { defer in.wg.Done(); _ = in.srv.Serve(ln) }()
	for range lanes {
		go func() { defer in.wg.Done(); in.fetcher() }()
	}
	m.mu.Lock()
	m.inlines[in.id] = in
	m.mu.Unlock()
	return in, nil
}

// newLanes builds the lanes' clients, each with a token of its own.
func newLanes(addr, namespace string) ([]*lane, error) {
	var lanes []*lane
	for range inlineLanes {
		l := &lane{token: randomHex(32), clients: dep.NewClientSet()}
		err := l.clients.CreateConsulClient(&dep.CreateConsulClientInput{Address: addr, Token: l.token,
			Namespace: namespace, TransportDialTimeout: 5 * time.Second, TransportDialKeepAlive: 30 * time.Second,
			TransportIdleConnTimeout: time.Minute, TransportMaxIdleConns: 1, TransportMaxIdleConnsPerHost: 1})
		if err != nil {
			return nil, fmt.Errorf("inline lane client: %w", err)
		}
		lanes = append(lanes, l)
	}
	return lanes, nil
}

// Close stops the fetchers and the lanes and forgets the keys tracked.
func (in *Inline) Close() { in.closed.Do(in.close) }

func (in *Inline) close() {
	in.m.mu.Lock()
	delete(in.m.inlines, in.id)
	in.m.mu.Unlock()
	in.cancel()
	in.srv.Close()
	in.wg.Wait()
	for _, l := range in.all {
		l.clients.Stop()
	}
	in.mu.Lock()
	in.m.met.inlineQueued.Sub(float64(len(in.queued))) // never to be read now
	in.queued = map[string]bool{}
	keys := make([]string, 0, len(in.tracked))
	for k := range in.tracked {
		keys = append(keys, k)
	}
	in.tracked = map[string]bool{}
	in.mu.Unlock()
	in.m.store.untrack(keys)
}

// Funcs are the template functions: service, replacing
// consul-template's, and the trailer's key name.
func (in *Inline) Funcs() template.FuncMap {
	return template.FuncMap{"service": in.service, InlineKeyFunc: in.trailerKey}
}

// Apply makes templates read service inline: each is read from its
// source and given as contents, with the trailer appended and the
// session's functions added to its own.
func (in *Inline) Apply(tcs ctconfig.TemplateConfigs) error {
	for _, tc := range tcs {
		src := ctconfig.StringVal(tc.Source)
		b, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("template %s: %w", src, err)
		}
		fm := maps.Clone(tc.ExtFuncMap)
		if fm == nil {
			fm = map[string]any{}
		}
		maps.Copy(fm, in.Funcs())
		tc.ExtFuncMap = fm
		tc.Source = ctconfig.String("")
		tc.Contents = ctconfig.String(string(b) + Trailer(ctconfig.StringVal(tc.LeftDelim), ctconfig.StringVal(tc.RightDelim)))
	}
	return nil
}

// Trailer is what is appended to a template with these delimiters: it
// outputs nothing and reads the session's key.
func Trailer(left, right string) string {
	if left == "" {
		left = "{{"
	}
	if right == "" {
		right = "}}"
	}
	return left + "with keyOrDefault (" + InlineKeyFunc + ") \"\"" + right + left + "end" + right
}

// service is consul-template's service function, answered inline: the
// same arguments, the same errors, the same values.
func (in *Inline) service(s ...string) ([]*dep.HealthService, error) {
	empty := []*dep.HealthService{}
	if len(s) == 0 || s[0] == "" {
		return empty, nil
	}
	q := strings.Join(s, "|")
	in.mu.Lock()
	a := in.cache[q]
	in.mu.Unlock()
	switch {
	case a == nil: // a query cached was parsed already: only a new one is
		if _, err := dep.NewHealthServiceQuery(q); err != nil {
			return nil, err
		}
	case in.current(a):
		return a.value, nil
	default: // changed: the mirror holds the new answer already, read it now
		if a, err := in.fetch(q); err == nil {
			in.remember(q, a)
			return a.value, nil
		}
	}
	in.miss(q)
	return empty, nil
}

// current: the mirror's answer is still the one a was decoded from.
func (in *Inline) current(a *inlineAnswer) bool {
	idx, ok := in.m.store.indexOf(a.key)
	return ok && idx == a.index
}

// miss queues q's fetch and makes this pass incomplete: the trailer's key
// is a new one, so consul-template waits for it, and the mirror answers
// it once every queued fetch is done.
func (in *Inline) miss(q string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.epoch++
	if in.queued[q] {
		return
	}
	if len(in.queued) == 0 {
		in.idle = make(chan struct{})
	}
	in.queued[q] = true
	in.m.met.inlineQueued.Inc()
	in.todo = append(in.todo, q)
	select {
	case in.kick <- struct{}{}:
	default:
	}
}

// trailerKey is the key the trailer reads: the session and the epoch.
func (in *Inline) trailerKey() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return inlineKeyPrefix + in.id + "/" + strconv.FormatUint(in.epoch, 10)
}

// fetcher runs queued fetches until the session ends. A failed fetch is
// tried again after a pause, as consul-template's watches retry: the
// pass stays incomplete meanwhile, so the live config stays as it is.
func (in *Inline) fetcher() {
	for {
		q, ok := in.next()
		if !ok {
			select {
			case <-in.ctx.Done():
				return
			case <-in.kick:
				continue
			}
		}
		in.passOn()
		if !in.fetchUntilDone(q) {
			return
		}
		in.done(q)
	}
}

// passOn wakes another fetcher while fetches are queued.
func (in *Inline) passOn() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.todo) > 0 {
		select {
		case in.kick <- struct{}{}:
		default:
		}
	}
}

// fetchUntilDone fetches q, retrying with back-off; false when the
// session ended first. One WARN line per streak of failures, whatever
// the number of services failing (an agent down at start fails them
// all): the next success says it is over.
func (in *Inline) fetchUntilDone(q string) bool {
	backoff := in.m.o.MinBackoff
	for {
		a, err := in.fetch(q)
		if err == nil {
			in.remember(q, a)
			if in.failing.Swap(false) {
				in.o.Log.Info("consul mirror: inline service reads answer again", "service", q)
			}
			return true
		}
		if in.ctx.Err() != nil {
			return false
		}
		logf := in.o.Log.Debug
		if !in.failing.Swap(true) {
			logf = in.o.Log.Warn
		}
		logf("consul mirror: inline service read failed; the pass waits for it, the live config stays; retrying",
			"service", q, "err", err, "retry_in", backoff)
		if !sleepCtx(in.ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, in.m.o.MaxBackoff)
	}
}

func (in *Inline) next() (string, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.todo) == 0 {
		return "", false
	}
	q := in.todo[0]
	in.todo = in.todo[1:]
	return q, true
}

func (in *Inline) done(q string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	delete(in.queued, q)
	in.m.met.inlineQueued.Dec()
	if len(in.queued) == 0 {
		close(in.idle)
	}
}

func (in *Inline) remember(q string, a *inlineAnswer) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.cache[q] = a
}

// fetch reads q through a lane with consul-template's own dependency
// code and view rules: stale allowed when max_stale is set, read again
// from the leader when the answer is older than that.
func (in *Inline) fetch(q string) (*inlineAnswer, error) {
	d, err := dep.NewHealthServiceQuery(q)
	if err != nil {
		return nil, err
	}
	var l *lane
	select {
	case l = <-in.lanes:
	case <-in.ctx.Done():
		return nil, in.ctx.Err()
	}
	defer func() { in.lanes <- l }()
	opts := &dep.QueryOptions{AllowStale: in.o.MaxStale != 0}
	v, rm, err := d.Fetch(l.clients, opts)
	if err == nil && opts.AllowStale && rm.LastContact > in.o.MaxStale {
		opts.AllowStale = false
		v, rm, err = d.Fetch(l.clients, opts)
	}
	in.m.met.inlineReads.WithLabelValues(result(err)).Inc()
	if err != nil {
		return nil, err
	}
	list, ok := v.([]*dep.HealthService)
	key := l.key.Load()
	if !ok || key == nil {
		return nil, errors.New("consul mirror: inline read answered nothing")
	}
	return &inlineAnswer{key: *key, index: rm.LastIndex, value: list}, nil
}

// serveLane answers a lane's request like ServeHTTP, but its first
// fetch is never held for a burst, and its key is tracked (before the
// answer is read, so a change after it moves the trailer's value) and
// handed to the lane.
func (in *Inline) serveLane(w http.ResponseWriter, r *http.Request) {
	l := in.laneOf(r.Header.Get("X-Consul-Token"))
	if l == nil {
		http.Error(w, "ACL not found", http.StatusForbidden)
		return
	}
	rt := classify(r)
	if rt.kind == kindPass {
		http.Error(w, "consul mirror: not a read", http.StatusBadRequest)
		return
	}
	in.track(rt.key)
	l.key.Store(&rt.key)
	if e := in.m.entryOrAnswer(w, r, rt, true); e != nil {
		resp, cur := in.m.store.snapshot(e)
		write(w, resp, cur)
	}
}

func (in *Inline) laneOf(token string) *lane {
	for _, l := range in.all {
		if subtle.ConstantTimeCompare([]byte(token), []byte(l.token)) == 1 {
			return l
		}
	}
	return nil
}

// track records that the session reads key, once.
func (in *Inline) track(key string) {
	in.mu.Lock()
	seen := in.tracked[key]
	in.tracked[key] = true
	in.mu.Unlock()
	if !seen {
		in.m.store.track(key)
	}
}

// idleCh is closed while no fetch is queued.
func (in *Inline) idleCh() <-chan struct{} {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.idle
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

// serveInlineKey answers the trailer's KV read. Its first read waits
// until the session's queued fetches are done; later reads block until an
// answer read inline changes. Its value is that generation, so every
// change is new data to consul-template.
func (m *Mirror) serveInlineKey(w http.ResponseWriter, r *http.Request, name string) {
	id, _, _ := strings.Cut(name, "/")
	m.mu.Lock()
	in := m.inlines[id]
	m.mu.Unlock()
	idx, wait, err := blockingParams(r)
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case in == nil: // a session closed: its runner is stopping
		http.Error(w, "consul mirror: inline session closed", http.StatusInternalServerError)
		return
	}
	m.met.served.WithLabelValues("inline", strconv.FormatBool(idx > 0)).Inc()
	if err := m.awaitInline(r.Context(), in, idx, wait); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	gen, _ := m.store.inline()
	body := fmt.Sprintf(`[{"LockIndex":0,"Key":%q,"Flags":0,"Value":%q,"CreateIndex":1,"ModifyIndex":%d}]`,
		strings.TrimPrefix(r.URL.Path, "/v1/kv/"), base64.StdEncoding.EncodeToString([]byte(strconv.FormatUint(gen, 10))), gen)
	write(w, &response{status: http.StatusOK, header: http.Header{"Content-Type": {"application/json"}}, body: []byte(body)}, gen)
}

// awaitInline holds a trailer read: a first read until the session is
// idle, a blocking one until the generation passes idx. Both end with the
// wait, the client, or an upstream failure (as block does).
func (m *Mirror) awaitInline(ctx context.Context, in *Inline, idx uint64, wait time.Duration) error {
	t := time.NewTimer(wait + rand.N(wait/16+1))
	defer t.Stop()
	for {
		upErr, broken := m.health.state()
		if upErr != nil {
			return upErr
		}
		gen, changed := m.store.inline()
		until := changed
		if idx == 0 {
			until = in.idleCh()
		} else if gen != idx {
			return nil
		}
		select {
		case <-until:
			if idx == 0 {
				return nil
			}
		case <-t.C:
			if idx == 0 {
				return errors.New("consul mirror: inline reads still pending")
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-broken:
		}
	}
}
