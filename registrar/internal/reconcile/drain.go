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
// failed call is logged, not retried: the die that follows settles it.
func (r *Reconciler) maintenance(ctx context.Context) {
	var ops []maint
	for _, cid := range slices.Sorted(maps.Keys(r.ctrs)) {
		t := r.ctrs[cid]
		switch {
		case t.drainPending:
			t.drainPending = false
			// Unseen containers use the policy: a kill hint may come
			// before the first inspect.
			if (t.seen && !t.drain) || (!t.seen && !r.opt.Policy.Health.Drain) || t.draining {
				continue
			}
			t.draining, t.drainRun = true, t.state.StartedAt
			ops = append(ops, r.ownedBy(cid, true)...)
		case t.undrainPending:
			t.undrainPending = false
			ops = append(ops, r.ownedBy(cid, false)...)
		}
	}
	if len(ops) == 0 {
		return
	}
	errs := parallel(ctx, r.opt.Concurrency, ops, func(ctx context.Context, o maint) error {
		cctx, cancel := r.callCtx(ctx)
		defer cancel()
		return r.cat.Maintenance(cctx, o.id, o.on, DrainReason)
	})
	for i, o := range ops {
		attrs := []any{"service_id", o.id, "container_id", container.ShortID(o.containerID)}
		switch {
		case errs[i] != nil:
			r.consulError(ctx)
			r.log.Warn("maintenance change failed", append(attrs, "drain", o.on, "error", errs[i])...)
		case o.on:
			r.log.Info("draining: service in maintenance until the container dies", attrs...)
		default:
			r.log.Info("drain ended: container runs again", attrs...)
		}
	}
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
