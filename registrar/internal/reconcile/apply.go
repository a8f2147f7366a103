package reconcile

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/switchyard/switchyard/registrar/internal/container"
	"github.com/switchyard/switchyard/registrar/internal/service"
)

// op is one Consul write.
type op struct {
	register    bool
	svc         service.Service // register
	id          string          // deregister
	containerID string
	reason      string // for metrics: Reason*
}

func (o op) serviceID() string {
	if o.register {
		return o.svc.ID
	}
	return o.id
}

// apply compares what the containers want with what Consul holds for the
// given service IDs and writes the difference. Failed writes schedule a
// retry of their container. It returns an error that is not a rejection
// of one service by Consul (the agent may be down or restarting), if any.
//
// why gives the reason of a registration for the container asking for it.
func (r *Reconciler) apply(ctx context.Context, ids map[string]bool, why func(cid string) string) error {
	if len(ids) == 0 {
		return nil
	}
	ops, touched := r.plan(ids, why)
	errs := parallel(ctx, r.opt.Concurrency, ops, func(ctx context.Context, o op) error {
		cctx, cancel := r.callCtx(ctx)
		defer cancel()
		if o.register {
			if err := r.cat.Register(cctx, o.svc); err != nil {
				return err
			}
			// The agent keeps a TTL check's last status over a
			// re-registration: set the one we want.
			return r.cat.UpdateDockerCheck(cctx, o.svc)
		}
		return r.cat.Deregister(cctx, o.id)
	})
	now := time.Now() // retries count from the answers: a write may take a timeout
	failed := map[string]bool{}
	var outage error
	for i, o := range ops {
		if err := r.record(ctx, o, errs[i]); err != nil {
			failed[o.containerID] = true
			if !isRejection(err) && outage == nil {
				outage = err
			}
		}
	}
	for cid := range touched {
		switch {
		case failed[cid]:
			r.retry(cid, now)
		case !r.unknown(cid): // an inspect retry stays pending
			if t, ok := r.ctrs[cid]; ok {
				t.attempts, t.writeErr = 0, ""
			}
		}
	}
	return outage
}

// plan returns the writes that make Consul hold what the containers want
// for ids, and the containers concerned.
func (r *Reconciler) plan(ids map[string]bool, why func(cid string) string) ([]op, map[string]bool) {
	// One winner per service ID, whatever the map order: the container
	// with the smallest ID. Two containers with one SERVICE_ID would
	// otherwise overwrite each other on every pass.
	want := map[string]service.Service{}
	for _, cid := range slices.Sorted(maps.Keys(r.ctrs)) {
		for _, s := range r.ctrs[cid].services {
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
			ops = append(ops, op{register: true, svc: s, containerID: s.ContainerID, reason: why(s.ContainerID)})
		case owned:
			// Unknown is not absent: a container whose inspect failed
			// may still run; it keeps its services until it is known
			// to be gone (or known to want none).
			if r.unknown(have.ContainerID) {
				continue
			}
			touched[have.ContainerID] = true
			if r.keep(have.ContainerID) {
				continue
			}
			ops = append(ops, op{id: id, containerID: have.ContainerID, reason: r.goneReason(have.ContainerID)})
		}
	}
	return ops, touched
}

// goneReason says why a container's service is deregistered.
func (r *Reconciler) goneReason(cid string) string {
	t, ok := r.ctrs[cid]
	switch {
	case !ok:
		return ReasonRemoved
	case t.seen && !t.state.Running:
		return ReasonStopped
	}
	return ReasonUnwanted
}

// record updates the loop's state after one write and returns err when it
// is a failure to retry. A service ID held by someone else is no failure:
// retrying would not change the holder's mind.
func (r *Reconciler) record(ctx context.Context, o op, err error) error {
	switch {
	case isNotOwned(err) && o.register:
		r.refuse(o, err)
	case isNotOwned(err):
		// Someone registered this ID over ours since we read it: it is
		// theirs now, and theirs to remove.
		delete(r.owned, o.id)
		r.log.Warn("service no longer ours; left in place", "service_id", o.id, "container_id", container.ShortID(o.containerID), "error", err)
	case err != nil:
		r.consulError(ctx)
		if t, ok := r.ctrs[o.containerID]; ok {
			t.writeErr = err.Error()
		}
		if ctx.Err() == nil {
			r.log.Warn("consul write failed; will retry", "service_id", o.serviceID(), "container_id", container.ShortID(o.containerID), "error", err)
		}
		return err
	case o.register:
		r.owned[o.svc.ID] = service.Registration{ID: o.svc.ID, ContainerID: o.svc.ContainerID, Fingerprint: o.svc.Fingerprint()}
		if t, ok := r.ctrs[o.containerID]; ok {
			delete(t.refused, o.svc.ID) // its holder removed it: ours now
			// A draining container's service registered anew (the
			// agent restarted without its state) is not in maintenance:
			// put it back before it takes traffic for long.
			if t.draining {
				t.setMaintPending()
			}
		}
		r.rec.Registered(o.reason)
		r.log.Info("registered", "service_id", o.svc.ID, "container_id", container.ShortID(o.containerID), "name", o.svc.Name, "address", o.svc.Address, "port", o.svc.Port)
	default:
		delete(r.owned, o.id)
		r.rec.Deregistered(o.reason)
		r.log.Info("deregistered", "service_id", o.id, "container_id", container.ShortID(o.containerID))
	}
	return nil
}

// refuse records a service ID a container asks for that someone else
// holds. It is logged and counted once; every full resync tries again, so
// the container gets the ID once its holder removes it.
func (r *Reconciler) refuse(o op, err error) {
	t := r.track(o.containerID)
	if _, ok := t.refused[o.svc.ID]; ok {
		return
	}
	if t.refused == nil {
		t.refused = map[string]string{}
	}
	holder := holderOf(err)
	t.refused[o.svc.ID] = holder
	r.refusals++
	r.log.Warn("service ID held by another owner; not taking it over",
		"service_id", o.svc.ID, "container_id", container.ShortID(o.containerID), "container", t.name, "holder", holderName(holder))
}

func holderName(h string) string {
	if h == "" {
		return "(no registrar: registered by hand or another tool)"
	}
	return "registrar node " + h
}

// logRejections logs a container's rejected metadata once, not on every
// resync, and again only when it changes.
func (r *Reconciler) logRejections(t *tracked, c container.Container, errs []error) {
	var msgs []string
	for _, err := range errs {
		msgs = append(msgs, err.Error())
	}
	joined := strings.Join(msgs, "\n")
	if t.rejections == joined {
		return
	}
	t.rejections = joined
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

// rejection is implemented by catalog errors that mean Consul refused one
// service (a 4xx), as opposed to Consul being unreachable.
type rejection interface{ Rejected() bool }

func isRejection(err error) bool {
	var rj rejection
	return errors.As(err, &rj) && rj.Rejected()
}

// notOwned is implemented by catalog errors that mean the service ID is
// held by someone else: by hand, another tool, or the registrar of another
// node. Holder is that registrar's node, or "" for none.
type notOwned interface {
	NotOwned() bool
	Holder() string
}

func isNotOwned(err error) bool {
	var no notOwned
	return errors.As(err, &no) && no.NotOwned()
}

func holderOf(err error) string {
	var no notOwned
	if errors.As(err, &no) {
		return no.Holder()
	}
	return ""
}
