package reconcile

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/switchyard/switchyard/registrar/internal/container"
	"github.com/switchyard/switchyard/registrar/internal/service"
)

// Status is what /ready and /status show. Field names are stable (added
// to, never renamed).
type Status struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason"` // why not ready; empty when ready
	// LastResync is the start of the last successful full resync.
	LastResync *time.Time `json:"last_resync"`
	// StepSince is the start of the step running now; null when idle.
	StepSince      *time.Time `json:"step_since"`
	Containers     int        `json:"containers"`      // containers tracked
	Services       int        `json:"services"`        // services this registrar owns in Consul
	RetriesPending int        `json:"retries_pending"` // containers awaiting an inspect or write retry
	// TakeoversRefused counts the service IDs a container asked for that
	// someone else held (each container and ID once); Refused lists the
	// ones still standing.
	TakeoversRefused uint64    `json:"takeovers_refused"`
	Refused          []Refusal `json:"refused"`
	// Draining counts the containers whose services are in maintenance
	// because they were told to stop.
	Draining int `json:"draining"`
	// Checks counts the health checks of the services we own by the
	// status we registered them with: the Docker health check's is the
	// one we keep it at; another check's is its initial status, or
	// "unknown" when it has none (Consul's probe decides).
	Checks map[string]int `json:"checks"`
}

// Refusal is a service ID a container asks for that is held by someone
// else, so it is not registered.
type Refusal struct {
	ServiceID   string `json:"service_id"`
	ContainerID string `json:"container_id"`
	Container   string `json:"container"`
	Holder      string `json:"holder"` // the holder's registrar node; "" when registered by hand or another tool
}

// busy is the step the loop is in.
type busy struct {
	since time.Time
	what  string
}

func (r *Reconciler) begin(now time.Time, what string) {
	r.busy.Store(&busy{since: now, what: what})
}

// Ready reports whether the last full resync succeeded, no inspect or write
// is waiting for a retry, and the loop is not stuck in a step for longer
// than Options.StallAfter. Safe to call from any goroutine.
func (r *Reconciler) Ready() bool { return r.Status().Ready }

// Status returns the state the loop last published, with a stall of the
// step running now taken into account. Safe to call from any goroutine.
func (r *Reconciler) Status() Status {
	st := *r.status.Load() // a copy; published values are never changed
	b := r.busy.Load()
	if b == nil {
		return st
	}
	since := b.since.UTC()
	st.StepSince = &since
	if d := time.Since(b.since); d > r.opt.StallAfter {
		st.Ready = false
		st.Reason = fmt.Sprintf("loop stalled: %s running for %s (bound %s)", b.what, d.Round(time.Millisecond), r.opt.StallAfter)
	}
	return st
}

// publish makes the loop's state after a step visible to Status.
func (r *Reconciler) publish() {
	st := &Status{Containers: len(r.ctrs), Services: len(r.owned), TakeoversRefused: r.refusals, Refused: []Refusal{}, Checks: r.checks()}
	if !r.lastResync.IsZero() {
		t := r.lastResync.UTC()
		st.LastResync = &t
	}
	var pending []string
	owning := map[string]bool{}
	for _, reg := range r.owned {
		owning[reg.ContainerID] = true
	}
	for id, t := range r.ctrs {
		if t.attempts > 0 || t.maintErr != "" {
			pending = append(pending, id)
		}
		if t.draining && owning[id] {
			st.Draining++
		}
		for sid, holder := range t.refused {
			st.Refused = append(st.Refused, Refusal{ServiceID: sid, ContainerID: id, Container: t.name, Holder: holder})
		}
	}
	slices.Sort(pending)
	slices.SortFunc(st.Refused, func(a, b Refusal) int {
		return cmp.Or(cmp.Compare(a.ServiceID, b.ServiceID), cmp.Compare(a.ContainerID, b.ContainerID))
	})
	st.RetriesPending = len(pending)
	st.Ready, st.Reason = r.readiness(pending)
	r.status.Store(st)
}

// checks counts the checks of the services we own by status.
func (r *Reconciler) checks() map[string]int {
	n := map[string]int{}
	for id, reg := range r.owned {
		t, ok := r.ctrs[reg.ContainerID]
		if !ok {
			continue
		}
		i := slices.IndexFunc(t.services, func(s service.Service) bool { return s.ID == id })
		if i < 0 {
			continue
		}
		for _, c := range t.services[i].AllChecks() {
			n[cmp.Or(c.Status, CheckUnknown)]++
		}
	}
	return n
}

// CheckUnknown is the status of a check registered without one: Consul's
// probe decides it.
const CheckUnknown = "unknown"

// readiness says whether the loop's view can be trusted, and if not why.
// A refused takeover does not count: it is the operator's conflict to
// solve, shown on /status, and registrar is doing what it should.
func (r *Reconciler) readiness(pending []string) (bool, string) {
	switch {
	case !r.resyncOK && r.resyncErr == "":
		return false, "start-up resync not done yet"
	case !r.resyncOK:
		return false, "full resync failed; retry pending: " + r.resyncErr
	case len(pending) > 0:
		id := pending[0]
		t := r.ctrs[id]
		what, err := "consul write for", t.writeErr
		switch {
		case t.inspectErr != "":
			what, err = "inspect of", t.inspectErr
		case t.maintErr != "" && t.writeErr == "":
			what, err = "maintenance change for", t.maintErr
		}
		return false, fmt.Sprintf("%s container %s failed; retry pending (%s awaiting a retry): %s",
			what, container.ShortID(id), plural(len(pending), "container"), err)
	}
	return true, ""
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
