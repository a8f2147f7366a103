package main

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"
)

// loadWindow is how long each of the two agent-load windows lasts (the
// -load flag); 0 skips them.
var loadWindow = 10 * time.Second

// churnEvery spaces the registrations of the churn window.
const churnEvery = 200 * time.Millisecond

// agentLoad is what a running tool costs the agent: its CPU seconds over
// a quiet window (no change: only the tool's own re-asking), then over a
// window of churn (an instance of an existing service registered or
// removed every churnEvery, a different service each time). A tool that
// re-asks Consul more, or asks it bigger questions per change, shows
// here: consul-template re-asks each blocking query every wait, the
// mirror reads the whole node dump once per change.
func agentLoad(a *agent, nth, services int) (quiet, churn float64, err error) {
	c0 := agentCPU(a)
	time.Sleep(loadWindow)
	c1 := agentCPU(a)
	var ids []string
	defer func() {
		for _, id := range ids { // what a window ended with
			_ = a.withTimeout(func(ctx context.Context) error {
				return a.client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
			})
		}
	}()
	end := time.Now().Add(loadWindow)
	for i := 0; time.Now().Before(end); i++ {
		if len(ids) > 0 && i%2 == 1 {
			id := ids[0]
			ids = ids[1:]
			err = a.withTimeout(func(ctx context.Context) error {
				return a.client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
			})
		} else {
			id := fmt.Sprintf("churn-%d-%d", nth, i)
			ids = append(ids, id)
			err = a.withTimeout(func(ctx context.Context) error {
				return a.client.Agent().ServiceRegisterOpts(&api.AgentServiceRegistration{ID: id,
					Name: fmt.Sprintf("s%05d", (i*7919)%services), Address: fmt.Sprintf("10.201.%d.%d", nth, i%250+1), Port: 8080},
					api.ServiceRegisterOpts{}.WithContext(ctx))
			})
		}
		if err != nil {
			return 0, 0, err
		}
		time.Sleep(churnEvery)
	}
	return c1 - c0, agentCPU(a) - c1, nil
}

// withTimeout runs one call to the agent with a deadline.
func (a *agent) withTimeout(call func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return call(ctx)
}
