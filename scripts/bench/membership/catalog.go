package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// catalog registers and deregisters instances on the private agent. Every
// call is bounded by the HTTP client's timeout.
type catalog struct{ agent *api.Agent }

func newCatalog(addr string) (*catalog, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.HttpClient = &http.Client{Timeout: 5 * time.Second}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	return &catalog{agent: c.Agent()}, nil
}

// add registers instance id of service name at 127.0.0.1:port (no check:
// an agent service without checks is passing).
func (c *catalog) add(id, name string, port int) error {
	reg := &api.AgentServiceRegistration{ID: id, Name: name, Address: "127.0.0.1", Port: port}
	if err := retry(func() error { return c.agent.ServiceRegister(reg) }); err != nil {
		return fmt.Errorf("register %s (service %s, port %d): %w", id, name, port, err)
	}
	return nil
}

func (c *catalog) remove(id string) error {
	if err := retry(func() error { return c.agent.ServiceDeregister(id) }); err != nil {
		return fmt.Errorf("deregister %s: %w", id, err)
	}
	return nil
}

// retry calls fn up to 3 times: on a busy machine the agent may miss the
// client's 5s timeout once, and a change made late still measures what
// it should. An answer of the 4xx kind is final.
func retry(fn func() error) error {
	var err error
	for range 3 {
		if err = fn(); err == nil || strings.Contains(err.Error(), "response code: 4") {
			return err
		}
	}
	return err
}

// change makes n changes interval apart, each one on a schedule fixed from
// the start (a slow call does not shift the ones after it):
//   - membership: the instance churnID of the load's service is
//     registered, then deregistered, alternately (the caller removes it
//     after the phase when n is odd);
//   - structural: a new service is registered each time (tag makes the
//     names unique); their IDs are returned, for removal once no proxy
//     watches any more.
func (b *bench) change(ctx context.Context, structural bool, tag string, n int) ([]string, error) {
	var made []string
	t0 := time.Now()
	for i := range n {
		if err := sleepUntil(ctx, t0.Add(time.Duration(i)*b.o.interval)); err != nil {
			return made, err
		}
		var err error
		switch {
		case structural:
			id := fmt.Sprintf("st-%s-%d", tag, i)
			made = append(made, id)
			err = b.cat.add(id, id, b.work[0].port)
		case i%2 == 0:
			err = b.cat.add(churnID, workService, b.churn.port)
		default:
			err = b.cat.remove(churnID)
		}
		if err != nil {
			return made, err
		}
	}
	return made, nil
}

// sleepUntil waits until t or until ctx ends.
func sleepUntil(ctx context.Context, t time.Time) error {
	return sleepCtx(ctx, time.Until(t))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}
