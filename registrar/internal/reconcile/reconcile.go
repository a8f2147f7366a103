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
package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
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
	Register(ctx context.Context, s service.Service) error
	// Deregister removes a service; an unknown ID is not an error.
	Deregister(ctx context.Context, serviceID string) error
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
	Logger      *slog.Logger
}

// Reconciler converges Consul to Docker. Create it with New, then call Run.
type Reconciler struct {
	src ContainerSource
	cat Catalog
	opt Options
	log *slog.Logger

	ready atomic.Bool

	// Everything below belongs to the loop goroutine.
	owned    map[string]service.Registration // service ID -> what Consul holds
	desired  map[string][]service.Service    // container ID -> services it should have
	states   map[string]container.State      // container ID -> last seen state, for keep rules
	lastErrs map[string]string               // container ID -> rejections last logged
	due      map[string]time.Time            // container ID -> when to re-read it
	cooldown map[string]time.Time            // container ID -> end of its debounce window
	attempts map[string]int                  // container ID -> failed attempts in a row

	resyncDue      time.Time // zero: none scheduled
	resyncAttempts int
	resyncOK       bool
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
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{
		src: src, cat: cat, opt: opt, log: log,
		owned:    map[string]service.Registration{},
		desired:  map[string][]service.Service{},
		states:   map[string]container.State{},
		lastErrs: map[string]string{},
		due:      map[string]time.Time{},
		cooldown: map[string]time.Time{},
		attempts: map[string]int{},
	}
}

// Ready reports whether the last full resync succeeded and no write is
// waiting for a retry. Safe to call from any goroutine.
func (r *Reconciler) Ready() bool { return r.ready.Load() }

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

// hint records an event. The first hint for a container is due at once; the
// following ones inside its debounce window are folded into one read at
// the window's end.
func (r *Reconciler) hint(ev container.Event, now time.Time) {
	if ev.Resync {
		r.resyncDue = now
		return
	}
	id := ev.ContainerID
	if id == "" {
		return
	}
	at := now
	if cd, ok := r.cooldown[id]; ok && now.Before(cd) {
		at = cd
	}
	if d, ok := r.due[id]; !ok || at.Before(d) {
		r.due[id] = at
	}
}

func (r *Reconciler) nextDue() (time.Time, bool) {
	var next time.Time
	found := false
	consider := func(t time.Time) {
		if !found || t.Before(next) {
			next, found = t, true
		}
	}
	if !r.resyncDue.IsZero() {
		consider(r.resyncDue)
	}
	for _, t := range r.due {
		consider(t)
	}
	return next, found
}

// step does whatever is due at now.
func (r *Reconciler) step(ctx context.Context, now time.Time) {
	if ctx.Err() != nil {
		return
	}
	for id, cd := range r.cooldown {
		if !now.Before(cd) {
			delete(r.cooldown, id)
		}
	}
	if !r.resyncDue.IsZero() && !now.Before(r.resyncDue) {
		r.fullResync(ctx, now)
	} else {
		var ids []string
		for id, t := range r.due {
			if !now.Before(t) {
				ids = append(ids, id)
			}
		}
		if len(ids) > 0 {
			slices.Sort(ids)
			r.syncContainers(ctx, ids, now)
		}
	}
	r.ready.Store(r.resyncOK && len(r.attempts) == 0)
}

type inspected struct {
	c   container.Container
	err error
}

func (r *Reconciler) inspectAll(ctx context.Context, ids []string) []inspected {
	return parallel(ctx, r.opt.Concurrency, ids, func(ctx context.Context, id string) inspected {
		c, err := r.src.Inspect(ctx, id)
		return inspected{c, err}
	})
}

// syncContainers re-reads a few containers and applies what changed.
func (r *Reconciler) syncContainers(ctx context.Context, ids []string, now time.Time) {
	affected := map[string]bool{}
	results := r.inspectAll(ctx, ids)
	for i, id := range ids {
		delete(r.due, id)
		r.cooldown[id] = now.Add(r.opt.Debounce)
		if !r.absorb(id, results[i], now) {
			continue
		}
		affected[id] = true
	}
	if err := r.apply(ctx, r.servicesOf(affected), now); err != nil {
		// Consul itself failed, not one service: it may come back empty
		// after a restart, so re-read everything soon.
		r.resyncOK = false
		at := now.Add(r.backoff(r.resyncAttempts))
		r.resyncAttempts++
		if r.resyncDue.IsZero() || at.Before(r.resyncDue) {
			r.resyncDue = at
		}
	}
}

// absorb updates the state of one container from an inspect. It returns
// false when the inspect failed and a retry was scheduled instead.
func (r *Reconciler) absorb(id string, res inspected, now time.Time) bool {
	switch {
	case errors.Is(res.err, container.ErrNotFound):
		delete(r.desired, id)
		delete(r.states, id)
		delete(r.lastErrs, id)
		return true
	case res.err != nil:
		if !errors.Is(res.err, context.Canceled) {
			r.log.Warn("inspect failed; will retry", "container_id", container.ShortID(id), "error", res.err)
		}
		r.retry(id, now)
		return false
	}
	c := res.c
	r.states[id] = c.State
	svcs, errs := service.FromContainer(c, r.opt.Policy)
	r.logRejections(c, errs)
	if len(svcs) > 0 {
		r.desired[id] = svcs
	} else {
		delete(r.desired, id)
	}
	return true
}

// logRejections logs a container's rejected metadata once, not on every
// resync, and again only when it changes.
func (r *Reconciler) logRejections(c container.Container, errs []error) {
	var msgs []string
	for _, err := range errs {
		msgs = append(msgs, err.Error())
	}
	joined := strings.Join(msgs, "\n")
	if r.lastErrs[c.ID] == joined {
		return
	}
	if joined == "" {
		delete(r.lastErrs, c.ID)
		return
	}
	r.lastErrs[c.ID] = joined
	for _, err := range errs {
		attrs := []any{"container_id", container.ShortID(c.ID), "container", c.Name}
		var e *service.Error
		if errors.As(err, &e) {
			attrs = append(attrs, "key", e.Key, "value", e.Value, "reason", e.Reason)
		} else {
			attrs = append(attrs, "error", err)
		}
		r.log.Warn("rejected container metadata", attrs...)
	}
}

// servicesOf returns the IDs of every service the given containers want or
// own in Consul.
func (r *Reconciler) servicesOf(containers map[string]bool) map[string]bool {
	ids := map[string]bool{}
	for cid := range containers {
		for _, s := range r.desired[cid] {
			ids[s.ID] = true
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
	fail := func(what string, err error) {
		r.resyncOK = false
		delay := r.backoff(r.resyncAttempts)
		r.resyncAttempts++
		r.resyncDue = now.Add(delay)
		if ctx.Err() == nil {
			r.log.Warn("resync failed; will retry", "step", what, "error", err, "retry_in", delay)
		}
	}
	summaries, err := r.src.List(ctx)
	if err != nil {
		fail("list containers", err)
		return
	}
	owned, err := r.cat.Owned(ctx)
	if err != nil {
		fail("list owned services", err)
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
	ids := slices.Sorted(maps.Keys(read))

	// The resync reads everything, so earlier schedules are moot; failures
	// below schedule their own retries.
	clear(r.due)
	clear(r.attempts)
	for id := range r.desired {
		if !exists[id] {
			delete(r.desired, id)
		}
	}
	for id := range r.states {
		if !exists[id] {
			delete(r.states, id)
			delete(r.lastErrs, id)
		}
	}
	results := r.inspectAll(ctx, ids)
	for i, id := range ids {
		r.absorb(id, results[i], now)
	}
	// Containers that exist but were not read hold no services.
	for id := range r.desired {
		if !read[id] {
			delete(r.desired, id)
		}
	}

	all := map[string]bool{}
	for id := range r.owned {
		all[id] = true
	}
	for _, svcs := range r.desired {
		for _, s := range svcs {
			all[s.ID] = true
		}
	}
	writeErr := r.apply(ctx, all, now)
	if writeErr != nil {
		fail("write services", writeErr)
		return
	}
	r.resyncOK = true
	r.resyncAttempts = 0
	r.resyncDue = time.Time{}
	if r.opt.Resync > 0 {
		r.resyncDue = now.Add(r.opt.Resync)
	}
	r.log.Debug("resync done", "containers", len(summaries), "inspected", len(ids), "owned", len(r.owned), "took", time.Since(start))
}

// op is one Consul write.
type op struct {
	register    bool
	svc         service.Service // register
	id          string          // deregister
	containerID string
}

// apply compares what the containers want with what Consul holds for the
// given service IDs and writes the difference. Failed writes schedule a
// retry of their container. It returns an error that is not a rejection
// of one service by Consul (the agent may be down or restarting), if any.
func (r *Reconciler) apply(ctx context.Context, ids map[string]bool, now time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	// One winner per service ID, whatever the map order: the container
	// with the smallest ID. Two containers with one SERVICE_ID would
	// otherwise overwrite each other on every pass.
	want := map[string]service.Service{}
	for _, cid := range slices.Sorted(maps.Keys(r.desired)) {
		for _, s := range r.desired[cid] {
			if !ids[s.ID] {
				continue
			}
			if cur, ok := want[s.ID]; ok {
				r.log.Warn("service ID wanted by two containers; keeping the first", "service_id", s.ID, "container_id", container.ShortID(cur.ContainerID), "other_container_id", container.ShortID(cid))
				continue
			}
			want[s.ID] = s
		}
	}
	var ops []op
	touched := map[string]bool{} // containers with writes in this batch
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		s, wanted := want[id]
		have, owned := r.owned[id]
		switch {
		case wanted:
			touched[s.ContainerID] = true
			if owned && have.Fingerprint == s.Fingerprint() && have.ContainerID == s.ContainerID {
				continue
			}
			ops = append(ops, op{register: true, svc: s, containerID: s.ContainerID})
		case owned:
			touched[have.ContainerID] = true
			if r.keep(have.ContainerID) {
				continue
			}
			ops = append(ops, op{id: id, containerID: have.ContainerID})
		}
	}
	errs := parallel(ctx, r.opt.Concurrency, ops, func(ctx context.Context, o op) error {
		if o.register {
			return r.cat.Register(ctx, o.svc)
		}
		return r.cat.Deregister(ctx, o.id)
	})
	failed := map[string]bool{}
	var outage error
	for i, o := range ops {
		err := errs[i]
		switch {
		case err != nil:
			failed[o.containerID] = true
			if !isRejection(err) && outage == nil {
				outage = err
			}
			if ctx.Err() == nil {
				r.log.Warn("consul write failed; will retry", "service_id", o.serviceID(), "container_id", container.ShortID(o.containerID), "error", err)
			}
		case o.register:
			r.owned[o.svc.ID] = service.Registration{ID: o.svc.ID, ContainerID: o.svc.ContainerID, Fingerprint: o.svc.Fingerprint()}
			r.log.Info("registered", "service_id", o.svc.ID, "container_id", container.ShortID(o.containerID), "name", o.svc.Name, "address", o.svc.Address, "port", o.svc.Port)
		default:
			delete(r.owned, o.id)
			r.log.Info("deregistered", "service_id", o.id, "container_id", container.ShortID(o.containerID))
		}
	}
	for cid := range touched {
		if failed[cid] {
			r.retry(cid, now)
		} else {
			delete(r.attempts, cid)
		}
	}
	return outage
}

func (o op) serviceID() string {
	if o.register {
		return o.svc.ID
	}
	return o.id
}

// keep reports whether a container's services stay registered although it
// wants none: it stopped, still exists, and the deregister mode says keep.
func (r *Reconciler) keep(cid string) bool {
	st, exists := r.states[cid]
	if !exists || st.Running {
		return false
	}
	switch r.opt.Deregister {
	case DeregisterNever:
		return true
	case DeregisterOnSuccess:
		return !st.Paused && st.ExitCode != 0 && !killedBySignal(st.ExitCode)
	}
	return false
}

// killedBySignal reads an exit status the way shells report one: 128+n is
// death by signal n (docker stop gives 143, docker kill 137).
func killedBySignal(code int) bool { return code > 128 && code <= 128+64 }

// retry schedules a re-read of a container after a capped exponential
// backoff. Failed writes are never dropped: the retry recomputes them.
func (r *Reconciler) retry(cid string, now time.Time) {
	a := r.attempts[cid]
	r.attempts[cid] = a + 1
	at := now.Add(r.backoff(a))
	if d, ok := r.due[cid]; !ok || at.Before(d) {
		r.due[cid] = at
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

// rejection is implemented by catalog errors that mean Consul refused one
// service (a 4xx), as opposed to Consul being unreachable.
type rejection interface{ Rejected() bool }

func isRejection(err error) bool {
	var rj rejection
	return errors.As(err, &rj) && rj.Rejected()
}

// DeregisterAll removes every service we own, for --on-shutdown=deregister.
// It reads ownership from Consul, so it needs no state from Run.
func (r *Reconciler) DeregisterAll(ctx context.Context) error {
	owned, err := r.cat.Owned(ctx)
	if err != nil {
		return err
	}
	errs := parallel(ctx, r.opt.Concurrency, owned, func(ctx context.Context, reg service.Registration) error {
		return r.cat.Deregister(ctx, reg.ID)
	})
	for i, reg := range owned {
		if errs[i] == nil {
			r.log.Info("deregistered on shutdown", "service_id", reg.ID, "container_id", container.ShortID(reg.ContainerID))
		}
	}
	return errors.Join(errs...)
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
