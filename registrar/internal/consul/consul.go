// Package consul adapts the local Consul agent's service endpoints to the
// reconciler. It registers through /v1/agent/service/register (the agent
// then runs the checks and keeps the catalog in sync by anti-entropy) and
// lists only the services whose meta names our node. A service ID held by
// anyone else (registered by hand, by another tool, or by the registrar of
// another node) is never overwritten or removed: every write first reads
// the agent's service and refuses with NotOwnedError unless it is ours.
package consul

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/registrar/internal/service"
)

// Catalog is the agent of one node, as seen by one registrar.
type Catalog struct {
	client *api.Client
	node   string
	agent  *agentInfo // explains errors; nil without Open
}

// New returns the catalog of services owned by node.
func New(client *api.Client, node string) *Catalog {
	return &Catalog{client: client, node: node}
}

// Ping checks that the agent answers.
func (c *Catalog) Ping(ctx context.Context) error {
	_, err := c.Owned(ctx) // also proves the token may read services
	return err
}

// Owned lists the agent's services carrying our node in their meta.
func (c *Catalog) Owned(ctx context.Context) ([]service.Registration, error) {
	filter := fmt.Sprintf("Meta[%s] == %s", strconv.Quote(service.MetaNode), strconv.Quote(c.node))
	svcs, err := c.client.Agent().ServicesWithFilterOpts(filter, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list owned services (node %s): %w", c.node, c.explain(err))
	}
	out := make([]service.Registration, 0, len(svcs))
	for id, s := range svcs {
		if s.Meta[service.MetaNode] != c.node { // belt and braces
			continue
		}
		out = append(out, service.Registration{
			ID:          id,
			ContainerID: s.Meta[service.MetaContainerID],
			Fingerprint: s.Meta[service.MetaFingerprint],
		})
	}
	return out, nil
}

// Register creates or replaces a service and its checks. An ID held by
// someone else is refused.
//
// It does not ask the agent to replace the existing checks: the agent
// would drop the service's maintenance check with them, so a resync or an
// update during a drain (or a `registrar drain`) would put the service
// back in rotation. The checks we no longer want are removed one by one
// after the registration instead.
func (c *Catalog) Register(ctx context.Context, s service.Service) error {
	if _, err := c.ours(ctx, s.ID); err != nil {
		return &WriteError{Op: "register", ServiceID: s.ID, Err: err}
	}
	stale, err := c.staleChecks(ctx, s)
	if err != nil {
		return &WriteError{Op: "register", ServiceID: s.ID, Err: err}
	}
	reg := Registration(s)
	opts := api.ServiceRegisterOpts{}.WithContext(ctx)
	if err := c.client.Agent().ServiceRegisterOpts(reg, opts); err != nil {
		return &WriteError{Op: "register", ServiceID: s.ID, Err: c.explain(err)}
	}
	for _, id := range stale {
		err := c.client.Agent().CheckDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return &WriteError{Op: "remove check " + id + " of", ServiceID: s.ID, Err: c.explain(err)}
		}
	}
	return nil
}

// staleChecks returns the IDs of the agent's checks of s that s no longer
// has, the maintenance check excepted.
func (c *Catalog) staleChecks(ctx context.Context, s service.Service) ([]string, error) {
	filter := "ServiceID == " + strconv.Quote(s.ID)
	have, err := c.client.Agent().ChecksWithFilterOpts(filter, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("read current checks: %w", c.explain(err))
	}
	want := map[string]bool{}
	for _, ch := range Registration(s).Checks {
		want[ch.CheckID] = true
	}
	var stale []string
	for id, ch := range have {
		if ch.ServiceID == s.ID && !want[id] && !strings.HasPrefix(id, MaintenanceCheckPrefix) {
			stale = append(stale, id)
		}
	}
	slices.Sort(stale)
	return stale, nil
}

// MaintenanceCheckPrefix starts the ID of the check the agent adds to a
// service in maintenance; the service ID follows.
const MaintenanceCheckPrefix = "_service_maintenance:"

// Deregister removes a service; one the agent does not know is gone
// already. An ID held by someone else is refused.
func (c *Catalog) Deregister(ctx context.Context, id string) error {
	exists, err := c.ours(ctx, id)
	if err != nil {
		return &WriteError{Op: "deregister", ServiceID: id, Err: err}
	}
	if !exists {
		return nil
	}
	err = c.client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return &WriteError{Op: "deregister", ServiceID: id, Err: c.explain(err)}
	}
	return nil
}

// ours reads the agent's service id: exists is false when there is none,
// and the error is a *NotOwnedError when it does not carry our node. The
// agent has no compare-and-set for services, so a hand registration made
// between this read and our write could still be overwritten; the window
// is one local round trip, where before it was forever.
func (c *Catalog) ours(ctx context.Context, id string) (exists bool, err error) {
	s, _, err := c.client.Agent().Service(id, (&api.QueryOptions{}).WithContext(ctx))
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read current holder: %w", c.explain(err))
	}
	if holder := s.Meta[service.MetaNode]; holder != c.node {
		return true, &NotOwnedError{ServiceID: id, Holder: holder}
	}
	return true, nil
}

// NotOwnedError refuses a write to a service ID held by someone else.
type NotOwnedError struct {
	ServiceID string
	Holder    string // the holder's registrar node; "" for a service not registered by a registrar
}

func (e *NotOwnedError) Error() string {
	if e.Holder == "" {
		return fmt.Sprintf("service ID %s is held by a service this registrar does not own (registered by hand or another tool)", e.ServiceID)
	}
	return fmt.Sprintf("service ID %s is held by the registrar of node %s", e.ServiceID, e.Holder)
}

// Registration is the agent registration of s, fingerprint included.
func Registration(s service.Service) *api.AgentServiceRegistration {
	meta := maps.Clone(s.Meta)
	if meta == nil {
		meta = map[string]string{}
	}
	meta[service.MetaFingerprint] = s.Fingerprint()
	reg := &api.AgentServiceRegistration{
		ID:      s.ID,
		Name:    s.Name,
		Tags:    s.Tags,
		Port:    s.Port,
		Address: s.Address,
		Meta:    meta,
	}
	for _, ch := range s.AllChecks() {
		reg.Checks = append(reg.Checks, agentCheck(s, ch))
	}
	return reg
}

// agentCheck is one check of s for the agent. Its ID is named by the
// check's index, not its position, so adding SERVICE_CHECK_2_* never
// renames (and resets the status of) check 1; check 0, registrator's
// unindexed keys, keeps the ID the agent gives a single check.
func agentCheck(s service.Service, ch service.Check) *api.AgentServiceCheck {
	id, name := "service:"+s.ID, fmt.Sprintf("Service '%s' check", s.Name)
	switch {
	case ch.Docker:
		id, name = DockerCheckID(s.ID), fmt.Sprintf("Service '%s' Docker health", s.Name)
	case ch.Index > 0:
		id, name = fmt.Sprintf("%s:%d", id, ch.Index), fmt.Sprintf("%s %d", name, ch.Index)
	}
	return &api.AgentServiceCheck{
		CheckID:       id,
		Name:          name,
		HTTP:          ch.HTTP,
		Method:        ch.Method,
		Header:        ch.Header,
		TLSSkipVerify: ch.TLSSkipVerify,
		TCP:           ch.TCP,
		GRPC:          ch.GRPC,
		GRPCUseTLS:    ch.GRPCUseTLS,
		Args:          ch.Args,
		TTL:           durationString(ch.TTL),
		Interval:      durationString(ch.Interval),
		Timeout:       durationString(ch.Timeout),
		Status:        ch.Status,

		DeregisterCriticalServiceAfter: durationString(ch.DeregisterAfter),
	}
}

// DockerCheckID is the ID of the check mirroring a service's Docker
// HEALTHCHECK.
func DockerCheckID(serviceID string) string { return "service:" + serviceID + ":docker" }

// UpdateDockerCheck sets the TTL check mirroring Docker's HEALTHCHECK to
// its desired status, which also restarts its TTL. A re-registration
// alone is not enough: the agent restores a TTL check's last status from
// its own saved state.
func (c *Catalog) UpdateDockerCheck(ctx context.Context, s service.Service) error {
	ch, ok := s.DockerCheck()
	if !ok {
		return nil
	}
	out := "Docker health: " + ch.Status
	err := c.client.Agent().UpdateTTLOpts(DockerCheckID(s.ID), out, ch.Status, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return &WriteError{Op: "update check of", ServiceID: s.ID, Err: c.explain(err)}
	}
	return nil
}

// Maintenance puts a service we own into maintenance (on) or takes it out.
// An ID held by someone else is refused; an unknown one is no error.
func (c *Catalog) Maintenance(ctx context.Context, id string, on bool, reason string) error {
	exists, err := c.ours(ctx, id)
	if err != nil || !exists {
		if err != nil {
			err = &WriteError{Op: "maintenance of", ServiceID: id, Err: err}
		}
		return err
	}
	opts := (&api.QueryOptions{}).WithContext(ctx)
	if on {
		err = c.client.Agent().EnableServiceMaintenanceOpts(id, reason, opts)
	} else {
		err = c.client.Agent().DisableServiceMaintenanceOpts(id, opts)
	}
	if err != nil {
		return &WriteError{Op: "maintenance of", ServiceID: id, Err: c.explain(err)}
	}
	return nil
}

func durationString(d interface{ String() string }) string {
	if s := d.String(); s != "0s" {
		return s
	}
	return ""
}

// WriteError is a failed register or deregister.
type WriteError struct {
	Op        string
	ServiceID string
	Err       error
}

func (e *WriteError) Error() string {
	return fmt.Sprintf("%s service %s: %v", e.Op, e.ServiceID, e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }

// NotOwned reports that the write was refused because someone else holds
// the service ID: not a failure to retry, and not ours to take.
func (e *WriteError) NotOwned() bool {
	var no *NotOwnedError
	return errors.As(e.Err, &no)
}

// Holder is the holder's registrar node when NotOwned, else "".
func (e *WriteError) Holder() string {
	var no *NotOwnedError
	if errors.As(e.Err, &no) {
		return no.Holder
	}
	return ""
}

// Rejected reports that the agent answered and refused this one service,
// as opposed to being unreachable: a rejection does not hint that the agent
// restarted and lost its state. The agent answers 500 for some refusals
// ("Scripts are disabled on this agent"), so any status counts, except
// 429, which is about load, not about the service.
func (e *WriteError) Rejected() bool {
	var se api.StatusError
	return errors.As(e.Err, &se) && se.Code != http.StatusTooManyRequests
}
