// Package reconcile keeps the services this registrar owns in Consul equal
// to what the running containers ask for. It works by state, not by
// events: Docker events are only hints naming a container to re-read, and
// a full resync (at start-up, after every event-stream reconnect and every
// resync interval) compares everything Docker runs with everything Consul
// holds under our ownership meta.
//
// One goroutine (Run's loop) owns all state. I/O for a batch (inspects,
// Consul writes) runs on a bounded set of workers the loop starts and waits
// for; no goroutine outlives its batch and none is started per event.
// Every Docker and Consul call has a deadline, so a hung engine or agent
// costs a timeout, never the loop; a step that still runs too long makes
// Ready false.
package reconcile

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/registrar/internal/container"
	"github.com/switchyard/switchyard/registrar/internal/service"
)

// ContainerSource is the Docker side.
type ContainerSource interface {
	// List returns every container that exists, running or not.
	List(ctx context.Context) ([]container.Summary, error)
	// Inspect returns the container, or an error wrapping
	// container.ErrNotFound when it no longer exists.
	Inspect(ctx context.Context, id string) (container.Container, error)
	// Watch sends hints to out until ctx is done, reconnecting on its own;
	// after every (re)connect it sends an Event with Resync set.
	Watch(ctx context.Context, out chan<- container.Event) error
}

// Catalog is the Consul side: the local agent's services that carry our
// ownership meta.
type Catalog interface {
	Owned(ctx context.Context) ([]service.Registration, error)
	// Register creates or updates a service. It refuses, with an error
	// whose NotOwned method returns true, an ID held by someone else.
	Register(ctx context.Context, s service.Service) error
	// Deregister removes a service; an unknown ID is not an error, one
	// held by someone else is refused like Register does.
	Deregister(ctx context.Context, serviceID string) error
	// UpdateDockerCheck sets the TTL check mirroring Docker's HEALTHCHECK
	// (if s has one) to its status, restarting its TTL.
	UpdateDockerCheck(ctx context.Context, s service.Service) error
	// Maintenance puts a service we own into maintenance or out of it.
	Maintenance(ctx context.Context, serviceID string, on bool, reason string) error
}

// Deregister modes: what happens to the services of a container that
// stopped but still exists. A removed container always loses its services.
const (
	DeregisterAlways    = "always"
	DeregisterOnSuccess = "on-success" // keep after a non-zero exit not caused by a signal
	DeregisterNever     = "never"
)

// Options tune a Reconciler. Zero values get the defaults noted.
type Options struct {
	Policy     service.Policy
	Deregister string        // default always
	Resync     time.Duration // periodic full resync; 0 disables
	// Debounce is the per-container quiet window: the first hint is acted
	// on at once, more hints inside the window make one more read at its
	// end. Default 50ms.
	Debounce    time.Duration
	Concurrency int           // parallel inspects and writes per batch; default 8
	RetryMin    time.Duration // first retry delay; default 100ms
	RetryMax    time.Duration // retry delay cap; default 30s
	// CallTimeout bounds each Docker and Consul call. Default 10s.
	CallTimeout time.Duration
	// StallAfter is how long one step (a full resync, or the re-read of a
	// few containers) may run before Ready reports the loop stalled.
	// Default 1m.
	StallAfter time.Duration
	Logger     *slog.Logger
	// Recorder is told what the loop does, for metrics; nil records
	// nothing.
	Recorder Recorder
}

// tracked is everything the loop knows about one container. Forgetting a
// container is one delete from Reconciler.ctrs.
type tracked struct {
	name     string
	services []service.Service // what it should have registered
	state    container.State   // last seen, for the keep rules
	seen     bool              // an inspect succeeded: name and state are valid
	// inspectErr is set while the last inspect failed: the container is
	// unknown, not absent, and keeps what it has in Consul.
	inspectErr string
	writeErr   string            // last failed Consul write, for the ready reason
	rejections string            // rejected metadata last logged
	refused    map[string]string // service ID -> holder: takeovers refused
	due        time.Time         // when to re-read it; zero: not scheduled
	cooldown   time.Time         // end of its debounce window
	attempts   int               // failed attempts in a row
	// Draining: drain is the container's setting (SERVICE_DRAIN or the
	// policy); drainPending a stop hint not acted on yet; draining that
	// its services belong in maintenance, for the run that started at
	// drainRun. maintPending says Consul may not match draining yet: a
	// change is due, or failed with maintErr and is retried at maintDue,
	// after a backoff counted by maintAttempts.
	drain, drainPending, draining, maintPending bool
	drainRun, maintDue                          time.Time
	maintErr                                    string
	maintAttempts                               int
}

// Reconciler converges Consul to Docker. Create it with New, then call Run.
type Reconciler struct {
	src ContainerSource
	cat Catalog
	opt Options
	log *slog.Logger
	rec Recorder

	status atomic.Pointer[Status] // published by the loop after each step
	busy   atomic.Pointer[busy]   // the step running now; nil when idle

	// Everything below belongs to the loop goroutine.
	owned map[string]service.Registration // service ID -> what Consul holds
	ctrs  map[string]*tracked             // container ID -> what we know

	resyncDue      time.Time // zero: none scheduled
	resyncAttempts int
	resyncOK       bool
	resyncErr      string    // why the last full resync failed
	lastResync     time.Time // start of the last successful full resync
	refusals       uint64    // takeovers refused so far
	ttlDue         time.Time // next refresh of the Docker health checks
	connected      bool      // a Resync hint came: the next one is a reconnect
}

// New returns a Reconciler; nothing runs until Run.
func New(src ContainerSource, cat Catalog, opt Options) *Reconciler {
	if opt.Deregister == "" {
		opt.Deregister = DeregisterAlways
	}
	if opt.Debounce <= 0 {
		opt.Debounce = 50 * time.Millisecond
	}
	if opt.Concurrency <= 0 {
		opt.Concurrency = 8
	}
	if opt.RetryMin <= 0 {
		opt.RetryMin = 100 * time.Millisecond
	}
	if opt.RetryMax < opt.RetryMin {
		opt.RetryMax = max(30*time.Second, opt.RetryMin)
	}
	if opt.CallTimeout <= 0 {
		opt.CallTimeout = 10 * time.Second
	}
	if opt.StallAfter <= 0 {
		opt.StallAfter = time.Minute
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rec := opt.Recorder
	if rec == nil {
		rec = nopRecorder{}
	}
	r := &Reconciler{
		src: src, cat: cat, opt: opt, log: log, rec: rec,
		owned: map[string]service.Registration{},
		ctrs:  map[string]*tracked{},
	}
	r.status.Store(&Status{Reason: "start-up resync not done yet", Refused: []Refusal{}, Checks: map[string]int{}})
	return r
}

// Run reconciles until ctx is done. It returns nil on cancellation; the
// event watcher and the loop are both waited for.
func (r *Reconciler) Run(ctx context.Context) error {
	events := make(chan container.Event, 1024)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := r.src.Watch(gctx, events); err != nil && gctx.Err() == nil {
			return err
		}
		return nil
	})
	g.Go(func() error { return r.loop(gctx, events) })
	return g.Wait()
}

func (r *Reconciler) loop(ctx context.Context, events <-chan container.Event) error {
	r.resyncDue = time.Now() // start-up resync
	r.ttlDue = time.Now().Add(r.ttlEvery())
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if next, ok := r.nextDue(); ok {
			timer.Reset(max(0, time.Until(next)))
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			r.hint(ev, time.Now())
			// Take every hint already queued, so a burst becomes one batch.
			for drained := false; !drained; {
				select {
				case ev := <-events:
					r.hint(ev, time.Now())
				default:
					drained = true
				}
			}
		case <-timer.C:
		}
		r.step(ctx, time.Now())
	}
}

// track returns the entry of a container, created empty if needed.
func (r *Reconciler) track(id string) *tracked {
	t, ok := r.ctrs[id]
	if !ok {
		t = &tracked{}
		r.ctrs[id] = t
	}
	return t
}

// hint records an event. The first hint for a container is due at once; the
// following ones inside its debounce window are folded into one read at
// the window's end.
func (r *Reconciler) hint(ev container.Event, now time.Time) {
	if ev.Resync {
		if r.connected {
			r.rec.Reconnect()
		}
		r.connected = true
		r.resyncDue = now
		return
	}
	if ev.ContainerID == "" {
		return
	}
	r.rec.Event(cmp.Or(ev.Type, "unknown"))
	t := r.track(ev.ContainerID)
	if ev.Drain {
		t.drainPending = true
	}
	at := now
	if now.Before(t.cooldown) {
		at = t.cooldown
	}
	if t.due.IsZero() || at.Before(t.due) {
		t.due = at
	}
}

func (r *Reconciler) nextDue() (time.Time, bool) {
	next := r.resyncDue
	if !r.ttlDue.IsZero() && (next.IsZero() || r.ttlDue.Before(next)) {
		next = r.ttlDue
	}
	for _, t := range r.ctrs {
		if !t.due.IsZero() && (next.IsZero() || t.due.Before(next)) {
			next = t.due
		}
		if t.maintPending && !t.maintDue.IsZero() && (next.IsZero() || t.maintDue.Before(next)) {
			next = t.maintDue // a failed maintenance change to retry
		}
	}
	return next, !next.IsZero()
}

// step does whatever is due at now, then publishes the status.
func (r *Reconciler) step(ctx context.Context, now time.Time) {
	if ctx.Err() != nil {
		return
	}
	for _, t := range r.ctrs {
		if !now.Before(t.cooldown) {
			t.cooldown = time.Time{}
		}
	}
	// Drains first: a stopping container leaves the rotation before
	// anything that may take a timeout.
	r.maintenance(ctx)
	if !r.resyncDue.IsZero() && !now.Before(r.resyncDue) {
		r.begin(now, "full resync")
		r.fullResync(ctx, now)
	} else {
		var ids []string
		for id, t := range r.ctrs {
			if !t.due.IsZero() && !now.Before(t.due) {
				ids = append(ids, id)
			}
		}
		if len(ids) > 0 {
			slices.Sort(ids)
			r.begin(now, "re-read of "+plural(len(ids), "container"))
			r.syncContainers(ctx, ids)
		}
	}
	r.maintenance(ctx) // ends the drains of containers that run again
	if !now.Before(r.ttlDue) {
		r.begin(now, "health check refresh")
		r.refreshChecks(ctx)
		r.ttlDue = time.Now().Add(r.ttlEvery())
	}
	r.busy.Store(nil)
	r.publish()
}

type inspected struct {
	c   container.Container
	err error
}

// callCtx bounds one Docker or Consul call: a hung engine or agent costs
// one timeout, not the loop.
func (r *Reconciler) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.opt.CallTimeout)
}

func (r *Reconciler) inspectAll(ctx context.Context, ids []string) []inspected {
	return parallel(ctx, r.opt.Concurrency, ids, func(ctx context.Context, id string) inspected {
		cctx, cancel := r.callCtx(ctx)
		defer cancel()
		c, err := r.src.Inspect(cctx, id)
		return inspected{c, err}
	})
}

// syncContainers re-reads a few containers and applies what changed.
func (r *Reconciler) syncContainers(ctx context.Context, ids []string) {
	affected := map[string]bool{}
	retrying := map[string]bool{} // re-read for a retry, not an event
	for _, id := range ids {
		if t, ok := r.ctrs[id]; ok && t.attempts > 0 {
			retrying[id] = true
		}
	}
	results := r.inspectAll(ctx, ids)
	now := time.Now() // schedules count from the answers: an inspect may take a timeout
	for i, id := range ids {
		t := r.track(id)
		t.due, t.cooldown = time.Time{}, now.Add(r.opt.Debounce)
		if r.absorb(id, results[i], now) {
			affected[id] = true
		}
	}
	why := func(cid string) string {
		if retrying[cid] {
			return ReasonRetry
		}
		return ReasonEvent
	}
	if err := r.apply(ctx, r.servicesOf(affected), why); err != nil {
		// Consul itself failed, not one service: it may come back empty
		// after a restart, so re-read everything soon.
		r.resyncOK = false
		r.resyncErr = "consul write failed: " + err.Error()
		at := now.Add(r.backoff(r.resyncAttempts))
		r.resyncAttempts++
		if r.resyncDue.IsZero() || at.Before(r.resyncDue) {
			r.resyncDue = at
		}
	}
}

// absorb updates the state of one container from an inspect. It returns
// false when the inspect failed: the container is then unknown (it keeps
// what it has) and a retry is scheduled.
func (r *Reconciler) absorb(id string, res inspected, now time.Time) bool {
	switch {
	case errors.Is(res.err, container.ErrNotFound):
		delete(r.ctrs, id) // known to be gone
		return true
	case res.err != nil:
		if !errors.Is(res.err, context.Canceled) {
			r.log.Warn("inspect failed; will retry", "container_id", container.ShortID(id), "error", res.err)
		}
		r.track(id).inspectErr = res.err.Error()
		r.retry(id, now)
		return false
	}
	t := r.track(id)
	if t.inspectErr != "" {
		t.inspectErr, t.attempts = "", 0
	}
	c := res.c
	if t.draining && c.State.Running && !c.State.StartedAt.Equal(t.drainRun) {
		t.draining = false // a new run: back in rotation
		t.setMaintPending()
	}
	t.seen, t.name, t.state = true, c.Name, c.State
	t.drain = service.Drain(c, r.opt.Policy)
	svcs, errs := service.FromContainer(c, r.opt.Policy)
	r.logRejections(t, c, errs)
	t.services = svcs
	for sid := range t.refused {
		if !slices.ContainsFunc(svcs, func(s service.Service) bool { return s.ID == sid }) {
			delete(t.refused, sid)
		}
	}
	return true
}

// servicesOf returns the IDs of every service the given containers want or
// own in Consul.
func (r *Reconciler) servicesOf(containers map[string]bool) map[string]bool {
	ids := map[string]bool{}
	for cid := range containers {
		if t, ok := r.ctrs[cid]; ok {
			for _, s := range t.services {
				ids[s.ID] = true
			}
		}
	}
	for id, reg := range r.owned {
		if containers[reg.ContainerID] {
			ids[id] = true
		}
	}
	return ids
}

// fullResync reads everything from both sides and applies the difference.
func (r *Reconciler) fullResync(ctx context.Context, now time.Time) {
	start := time.Now()
	summaries, owned, failed, err := r.readBoth(ctx)
	if err != nil {
		r.rec.Resync(time.Since(start), false)
		r.resyncFailed(ctx, time.Now(), failed, err)
		return
	}
	// Consul's view replaces ours: an agent restarted without its state
	// owns nothing, and everything will be registered again.
	r.owned = make(map[string]service.Registration, len(owned))
	for _, reg := range owned {
		r.owned[reg.ID] = reg
	}
	// Read the running containers, and the stopped ones that still own
	// services (their exit code decides whether they keep them).
	exists := make(map[string]bool, len(summaries))
	read := map[string]bool{}
	for _, s := range summaries {
		exists[s.ID] = true
		if s.Running {
			read[s.ID] = true
		}
	}
	for _, reg := range owned {
		if exists[reg.ContainerID] {
			read[reg.ContainerID] = true
		}
	}
	// The listing is the truth about what exists: the rest is gone. The
	// resync reads everything, so earlier schedules are moot; failures
	// below schedule their own retries.
	for id, t := range r.ctrs {
		if !exists[id] {
			delete(r.ctrs, id)
			continue
		}
		t.due, t.attempts = time.Time{}, 0
		if !read[id] { // exists, stopped, owns nothing: holds no services
			t.services, t.inspectErr = nil, ""
		}
	}
	ids := slices.Sorted(maps.Keys(read))
	results := r.inspectAll(ctx, ids)
	done := time.Now() // schedules count from the answers
	for i, res := range results {
		r.absorb(ids[i], res, done)
	}
	if err := r.apply(ctx, r.allServices(), func(string) string { return ReasonResync }); err != nil {
		r.rec.Resync(time.Since(start), false)
		r.resyncFailed(ctx, time.Now(), "write services", err)
		return
	}
	r.rec.Resync(time.Since(start), true)
	r.resyncOK, r.resyncErr, r.resyncAttempts = true, "", 0
	r.lastResync = now // what it read is at least as new as this
	r.resyncDue = time.Time{}
	if r.opt.Resync > 0 {
		r.resyncDue = time.Now().Add(r.opt.Resync)
	}
	r.log.Debug("resync done", "containers", len(summaries), "inspected", len(ids), "owned", len(r.owned), "took", time.Since(start))
}

// readBoth lists the containers and our services; on failure it names the
// call that failed.
func (r *Reconciler) readBoth(ctx context.Context) ([]container.Summary, []service.Registration, string, error) {
	cctx, cancel := r.callCtx(ctx)
	summaries, err := r.src.List(cctx)
	cancel()
	if err != nil {
		return nil, nil, "list containers", err
	}
	cctx, cancel = r.callCtx(ctx)
	owned, err := r.cat.Owned(cctx)
	cancel()
	if err != nil {
		r.consulError(ctx)
		return nil, nil, "list owned services", err
	}
	return summaries, owned, "", nil
}

func (r *Reconciler) resyncFailed(ctx context.Context, now time.Time, what string, err error) {
	r.resyncOK = false
	r.resyncErr = what + ": " + err.Error()
	delay := r.backoff(r.resyncAttempts)
	r.resyncAttempts++
	r.resyncDue = now.Add(delay)
	if ctx.Err() == nil {
		r.log.Warn("resync failed; will retry", "step", what, "error", err, "retry_in", delay)
	}
}

// allServices returns every service ID owned or wanted.
func (r *Reconciler) allServices() map[string]bool {
	all := map[string]bool{}
	for id := range r.owned {
		all[id] = true
	}
	for _, t := range r.ctrs {
		for _, s := range t.services {
			all[s.ID] = true
		}
	}
	return all
}

// keep reports whether a container's services stay registered although it
// wants none: it stopped, still exists, and the deregister mode says keep.
func (r *Reconciler) keep(cid string) bool {
	t, ok := r.ctrs[cid]
	if !ok || !t.seen || t.state.Running {
		return false
	}
	switch r.opt.Deregister {
	case DeregisterNever:
		return true
	case DeregisterOnSuccess:
		return !t.state.Paused && t.state.ExitCode != 0 && !killedBySignal(t.state.ExitCode)
	}
	return false
}

// unknown reports whether the last inspect of a container failed: it may
// still run, so its services stay until it is known to be gone.
func (r *Reconciler) unknown(cid string) bool {
	t, ok := r.ctrs[cid]
	return ok && t.inspectErr != ""
}

// killedBySignal reads an exit status the way shells report one: 128+n is
// death by signal n (docker stop gives 143, docker kill 137).
func killedBySignal(code int) bool { return code > 128 && code <= 128+64 }

// retry schedules a re-read of a container after a capped exponential
// backoff. Failed writes are never dropped: the retry recomputes them.
func (r *Reconciler) retry(cid string, now time.Time) {
	t := r.track(cid)
	at := now.Add(r.backoff(t.attempts))
	t.attempts++
	if t.due.IsZero() || at.Before(t.due) {
		t.due = at
	}
}

func (r *Reconciler) backoff(attempt int) time.Duration {
	d := r.opt.RetryMin
	for range min(attempt, 32) {
		d *= 2
		if d >= r.opt.RetryMax {
			return r.opt.RetryMax
		}
	}
	return d
}

// DeregisterAll removes every service we own, for --on-shutdown=deregister.
// It reads ownership from Consul, so it needs no state from Run.
func (r *Reconciler) DeregisterAll(ctx context.Context) error {
	cctx, cancel := r.callCtx(ctx)
	owned, err := r.cat.Owned(cctx)
	cancel()
	if err != nil {
		r.consulError(ctx)
		return err
	}
	errs := parallel(ctx, r.opt.Concurrency, owned, func(ctx context.Context, reg service.Registration) error {
		cctx, cancel := r.callCtx(ctx)
		defer cancel()
		return r.cat.Deregister(cctx, reg.ID)
	})
	for i, reg := range owned {
		switch {
		case isNotOwned(errs[i]): // taken over since we listed it: not ours to remove
			r.log.Warn("not deregistered on shutdown: no longer ours", "service_id", reg.ID, "error", errs[i])
			errs[i] = nil
		case errs[i] != nil:
			r.consulError(ctx)
		default:
			r.rec.Deregistered(ReasonShutdown)
			r.log.Info("deregistered on shutdown", "service_id", reg.ID, "container_id", container.ShortID(reg.ContainerID))
		}
	}
	return errors.Join(errs...)
}

// consulError counts a failed Consul call, unless it failed because Run
// is stopping.
func (r *Reconciler) consulError(ctx context.Context) {
	if ctx.Err() == nil {
		r.rec.ConsulError()
	}
}

// parallel runs f over items on at most n goroutines and returns the
// results in order. It returns when all are done.
func parallel[T, R any](ctx context.Context, n int, items []T, f func(context.Context, T) R) []R {
	out := make([]R, len(items))
	if len(items) == 1 { // the common single-event case: no goroutine
		out[0] = f(ctx, items[0])
		return out
	}
	var g errgroup.Group
	g.SetLimit(n)
	for i, it := range items {
		g.Go(func() error {
			out[i] = f(ctx, it)
			return nil
		})
	}
	_ = g.Wait()
	return out
}
