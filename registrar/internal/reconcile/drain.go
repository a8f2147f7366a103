package reconcile

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/switchyard/switchyard/registrar/internal/container"
	"github.com/switchyard/switchyard/registrar/internal/service"
)

// DrainReason is the maintenance reason of a stopping container's
// services, as Consul shows it.
const DrainReason = "registrar: container stopping (drain)"

// maint is one maintenance change.
type maint struct {
	id, containerID string
	on              bool
}

// maintenance acts on pending drains and undrains. A drain puts every
// service the container owns in Consul into maintenance, so renderers drop
// it while the process still finishes its requests; it lasts until the
// container dies (its services are then deregistered) or runs again. A
// failed change is retried with backoff until it is made or moot: left
// alone, a drain that failed while Consul blinked would leave a stopping
// container in rotation for its whole grace period.
func (r *Reconciler) maintenance(ctx context.Context) {
	ops := r.maintOps(time.Now())
	if len(ops) == 0 {
		return
	}
	errs := parallel(ctx, r.opt.Concurrency, ops, func(ctx context.Context, o maint) error {
		cctx, cancel := r.callCtx(ctx)
		defer cancel()
		return r.cat.Maintenance(cctx, o.id, o.on, DrainReason)
	})
	failed := map[string]error{}
	for i, o := range ops {
		attrs := []any{"service_id", o.id, "container_id", container.ShortID(o.containerID)}
		switch {
		case isNotOwned(errs[i]):
			// Taken over since we listed it: not ours to change, and
			// retrying would not change the holder's mind.
			r.log.Warn("maintenance not changed: service no longer ours", append(attrs, "error", errs[i])...)
		case errs[i] != nil:
			r.consulError(ctx)
			if failed[o.containerID] == nil {
				failed[o.containerID] = errs[i]
			}
			if ctx.Err() == nil {
				r.log.Warn("maintenance change failed; will retry", append(attrs, "drain", o.on, "error", errs[i])...)
			}
		case o.on:
			r.log.Info("draining: service in maintenance until the container dies", attrs...)
		default:
			r.log.Info("drain ended: container runs again", attrs...)
		}
	}
	r.maintDone(ops, failed, time.Now())
}

// maintOps turns pending drains into maintenance changes: every service
// of a container whose Consul maintenance is not known to match its
// draining state, unless a failed change waits for its backoff.
func (r *Reconciler) maintOps(now time.Time) []maint {
	var ops []maint
	for _, cid := range slices.Sorted(maps.Keys(r.ctrs)) {
		t := r.ctrs[cid]
		if t.drainPending {
			t.drainPending = false
			// Unseen containers use the policy: a kill hint may come
			// before the first inspect.
			drains := (t.seen && t.drain) || (!t.seen && r.opt.Policy.Health.Drain)
			if drains && !t.draining {
				t.draining, t.drainRun = true, t.state.StartedAt
				t.setMaintPending()
			}
		}
		if !t.maintPending || now.Before(t.maintDue) {
			continue
		}
		more := r.ownedBy(cid, t.draining)
		if len(more) == 0 { // it owns nothing (any more): nothing to change
			t.maintSettled()
		}
		ops = append(ops, more...)
	}
	return ops
}

// maintDone records the outcome of maintenance changes: a container with a
// failed one is tried again after a backoff of its own (its re-reads and
// write retries must not reset it), and is not ready meanwhile.
func (r *Reconciler) maintDone(ops []maint, failed map[string]error, now time.Time) {
	done := map[string]bool{}
	for _, o := range ops {
		t, ok := r.ctrs[o.containerID]
		if !ok || done[o.containerID] {
			continue
		}
		done[o.containerID] = true
		err := failed[o.containerID]
		if err == nil {
			t.maintSettled()
			continue
		}
		t.maintErr = err.Error()
		t.maintDue = now.Add(r.backoff(t.maintAttempts)) // nextDue wakes the loop then
		t.maintAttempts++
	}
}

// setMaintPending asks for the maintenance of t's services to be made to
// match its draining state at once: a new decision does not wait for the
// backoff of an earlier failure.
func (t *tracked) setMaintPending() {
	t.maintPending, t.maintDue = true, time.Time{}
}

// maintSettled records that Consul matches t's draining state.
func (t *tracked) maintSettled() {
	t.maintPending, t.maintErr, t.maintAttempts, t.maintDue = false, "", 0, time.Time{}
}

// ownedBy is a maintenance change for every service cid owns in Consul.
func (r *Reconciler) ownedBy(cid string, on bool) []maint {
	var ops []maint
	for _, id := range slices.Sorted(maps.Keys(r.owned)) {
		if r.owned[id].ContainerID == cid {
			ops = append(ops, maint{id: id, containerID: cid, on: on})
		}
	}
	return ops
}

// ttlEvery is how often the Docker health checks are refreshed: a third
// of their TTL, so two refreshes may fail before the check turns critical.
func (r *Reconciler) ttlEvery() time.Duration {
	ttl := r.opt.Policy.Health.TTL
	if ttl <= 0 {
		ttl = service.DefaultHealthTTL
	}
	return ttl / 3
}

// refreshChecks sets every owned Docker health check to its desired status,
// which restarts its TTL.
func (r *Reconciler) refreshChecks(ctx context.Context) {
	var svcs []service.Service
	for _, cid := range slices.Sorted(maps.Keys(r.ctrs)) {
		for _, s := range r.ctrs[cid].services {
			if _, ok := s.DockerCheck(); ok && r.owned[s.ID].ContainerID == cid {
				svcs = append(svcs, s)
			}
		}
	}
	errs := parallel(ctx, r.opt.Concurrency, svcs, func(ctx context.Context, s service.Service) error {
		cctx, cancel := r.callCtx(ctx)
		defer cancel()
		return r.cat.UpdateDockerCheck(cctx, s)
	})
	for i, err := range errs {
		if err != nil {
			r.consulError(ctx)
		}
		if err != nil && ctx.Err() == nil {
			r.log.Warn("health check refresh failed", "service_id", svcs[i].ID, "error", err)
		}
	}
}
