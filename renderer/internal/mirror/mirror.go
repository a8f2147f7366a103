// Package mirror is a local, read-only subset of Consul's HTTP API for the
// embedded consul-template. consul-template holds one blocking query, so
// one connection, per dependency; a template over every service needs
// one per service, past the 200 a default agent allows a client address.
// The mirror answers those blocking queries itself, from answers it
// fetched once, and learns what changed from two upstream blocking
// queries (the node dump for services, nodes and checks; the KV store),
// then fetches again only the answers that changed. It never holds more
// than MaxUpstreamConns connections to the agent.
//
// Answers are Consul's own bytes for the same path and parameters, so
// consul-template decodes exactly what it would have read from the agent;
// only X-Consul-Index is the mirror's own, moving forward only.
package mirror

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
)

// Options configure a Mirror; zero values take the defaults below.
type Options struct {
	Upstream Upstream
	Log      *slog.Logger
	// UpstreamWait is the wait of the mirror's own blocking queries.
	UpstreamWait time.Duration
	// MinBackoff and MaxBackoff pace retries of a failing watch.
	MinBackoff, MaxBackoff time.Duration
	// PollEvery: how often answers no watch covers are fetched again.
	PollEvery time.Duration
	// FirstSyncWait: how long a request waits for the first dump before
	// the mirror answers 503.
	FirstSyncWait time.Duration
	// Secret, when set, is the token every request must carry
	// (X-Consul-Token): the mirror answers with the renderer's own Consul
	// token, so on a loopback port it must not answer anyone else.
	Secret string

	// transport replaces the upstream transport (tests: a fake agent in
	// memory, so the tests can run in a synctest bubble).
	transport http.RoundTripper
}

func (o *Options) defaults() {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.UpstreamWait <= 0 {
		o.UpstreamWait = 5 * time.Minute
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 250 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(10*time.Second, o.MinBackoff)
	}
	if o.PollEvery <= 0 {
		o.PollEvery = 10 * time.Second
	}
	if o.FirstSyncWait <= 0 {
		o.FirstSyncWait = 10 * time.Second
	}
}

// Mirror is the read mirror. New, then Run; serve Handler on a listener.
type Mirror struct {
	o      Options
	up     *upstream
	store  *store
	health *health
	met    *metrics
	prev   fingerprints // last dump read; only the dump watch uses it
	// dumpCost is how long decoding the last dump took (ns).
	dumpCost atomic.Int64

	// ctx ends the first fetches when Run returns; fetches waits for them.
	ctx     context.Context
	cancel  context.CancelFunc
	fetches sync.WaitGroup

	mu       sync.Mutex
	closed   bool             // Run returned: no new first fetch
	inflight map[string]*call // first fetches, one per key
	held     []*call          // first fetches done, answered together (releaseFirst)
	heldT    *time.Timer      // answers the held ones at maxFirstHold
	kvOnce   sync.Once
	kvStart  chan struct{}      // closed when a KV answer is first asked for
	inlines  map[string]*Inline // open inline sessions by id
}

// call is one first fetch shared by every request for the same key.
type call struct {
	done chan struct{}
	// now: answer as soon as fetched, never held with a burst (the
	// inline lanes ask one key at a time and wait for each answer).
	now  bool
	e    *entry
	resp *response // an answer not kept (4xx), passed on as it is
	err  error
}

// New builds a mirror; nothing runs until Run.
func New(o Options) *Mirror {
	o.defaults()
	m := &Mirror{o: o, store: newStore(), health: newHealth(), inflight: map[string]*call{}, kvStart: make(chan struct{}),
		inlines: map[string]*Inline{}}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.met = newMetrics(func() float64 {
		err, _ := m.health.state()
		if err == nil && m.health.isSynced() {
			return 1
		}
		return 0
	})
	m.up = newUpstream(o.Upstream, m.met)
	if o.transport != nil {
		m.up.client.Transport = o.transport
	}
	return m
}

// Collectors are the mirror's metric families.
func (m *Mirror) Collectors() []prometheus.Collector { return m.met.collectors() }

// UpstreamConns is the number of connections open to the agent now.
func (m *Mirror) UpstreamConns() int { return m.up.Conns() }

// Run runs the watches, the refreshers and the housekeeping until ctx
// ends. The KV watch starts with the first KV answer asked for: a
// template without KV costs no connection for it.
func (m *Mirror) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		m.runWatch(ctx, watch{name: watchDump, path: dumpPath, answer: m.onDump, churn: true,
			gap: func() time.Duration { return dumpCostFactor * time.Duration(m.dumpCost.Load()) }})
		return nil
	})
	g.Go(func() error {
		select {
		case <-ctx.Done():
		case <-m.kvStart:
			m.runWatch(ctx, watch{name: watchKV, path: kvPath, answer: m.onKV})
		}
		return nil
	})
	for range fetchSlots {
		g.Go(func() error { m.refresher(ctx); return nil })
	}
	g.Go(func() error { m.housekeeping(ctx); return nil })
	err := g.Wait()
	m.cancel()
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.fetches.Wait()
	m.up.client.CloseIdleConnections()
	return err
}

// Serve serves the mirror's API on ln until ctx ends. Blocking queries
// end with ctx too.
func (m *Mirror) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: m, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-errc
		return nil
	}
}
