// Package consul adapts the local Consul agent's service endpoints to the
// reconciler. It registers through /v1/agent/service/register (the agent
// then runs the checks and keeps the catalog in sync by anti-entropy) and
// sees only the services whose meta names our node: a service registered
// by anyone else is never read, so it can never be removed.
package consul

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strconv"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/registrar/internal/service"
)

// Catalog is the agent of one node, as seen by one registrar.
type Catalog struct {
	client *api.Client
	node   string
}

// Config says how to reach the agent.
type Config struct {
	Address   string // "host:port", "http(s)://host:port" or "unix:///path"
	Token     string
	TokenFile string
	CACert    string
}

// NewClient builds an API client. Unset fields keep consul/api's defaults,
// which read the CONSUL_* environment.
func NewClient(cfg Config) (*api.Client, error) {
	c := api.DefaultConfig()
	if cfg.Address != "" {
		c.Address = cfg.Address
	}
	if cfg.Token != "" {
		c.Token = cfg.Token
	}
	if cfg.TokenFile != "" {
		c.TokenFile = cfg.TokenFile
	}
	if cfg.CACert != "" {
		c.TLSConfig.CAFile = cfg.CACert
	}
	client, err := api.NewClient(c)
	if err != nil {
		return nil, fmt.Errorf("consul client for %q: %w", cfg.Address, err)
	}
	return client, nil
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
		return nil, fmt.Errorf("list owned services (node %s): %w", c.node, err)
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

// Register creates or replaces a service and its check.
func (c *Catalog) Register(ctx context.Context, s service.Service) error {
	reg := Registration(s)
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := c.client.Agent().ServiceRegisterOpts(reg, opts); err != nil {
		return &WriteError{Op: "register", ServiceID: s.ID, Err: err}
	}
	return nil
}

// Deregister removes a service; one the agent does not know is gone already.
func (c *Catalog) Deregister(ctx context.Context, id string) error {
	err := c.client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return &WriteError{Op: "deregister", ServiceID: id, Err: err}
	}
	return nil
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
	if ch := s.Check; ch != nil {
		reg.Check = &api.AgentServiceCheck{
			HTTP:          ch.HTTP,
			Method:        ch.Method,
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
	return reg
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

// Rejected reports that the agent answered and refused this one service,
// as opposed to being unreachable: a rejection does not hint that the agent
// restarted and lost its state. The agent answers 500 for some refusals
// ("Scripts are disabled on this agent"), so any status counts, except
// 429, which is about load, not about the service.
func (e *WriteError) Rejected() bool {
	var se api.StatusError
	return errors.As(e.Err, &se) && se.Code != http.StatusTooManyRequests
}
