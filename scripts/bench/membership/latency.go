package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// latencyResult is one pipeline's catalog change -> served latencies.
type latencyResult struct {
	add, remove []time.Duration
	missed      int // trials whose change it did not serve within probeLimit
}

const (
	probeLimit  = 15 * time.Second
	probeEvery  = 2 * time.Millisecond
	removeQuiet = 500 * time.Millisecond // no request reached it for this long: it is gone
)

// latency runs the trials: an instance of latService, with a backend of
// its own, is registered; the time until each pipeline first sends it a
// request (as the backend saw it) is the add latency. Then it is
// deregistered; the time of the last request it got is the remove
// latency. Every pipeline probes at once with a new connection per
// request, so each sees what a new client sees.
func (g *group) latency(ctx context.Context) (map[string]*latencyResult, error) {
	res := map[string]*latencyResult{}
	for _, p := range g.pipes {
		res[p.tool] = &latencyResult{}
	}
	for i := range g.b.o.trials {
		be, err := startBackend(fmt.Sprintf("%s-%s-%d", latService, g.kind.name, i))
		if err != nil {
			return res, err
		}
		err = g.trial(ctx, be, res)
		be.close()
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// trial adds then removes be and records each pipeline's latencies.
func (g *group) trial(ctx context.Context, be *backend, res map[string]*latencyResult) error {
	if err := g.b.cat.add(be.name, latService, be.port); err != nil {
		return err
	}
	t0 := time.Now()
	g.probeAll(ctx, func(p *pipeline) bool {
		first, _ := be.seen(p.tool)
		return !first.IsZero()
	}, func(p *pipeline, ok bool) {
		first, _ := be.seen(p.tool)
		record(res[p.tool], &res[p.tool].add, ok, first.Sub(t0))
	})
	if err := sleepCtx(ctx, 300*time.Millisecond); err != nil {
		return err
	}
	if err := g.b.cat.remove(be.name); err != nil {
		return err
	}
	t1 := time.Now()
	g.probeAll(ctx, func(p *pipeline) bool {
		_, last := be.seen(p.tool)
		return time.Since(t1) > removeQuiet && time.Since(last) > removeQuiet
	}, func(p *pipeline, ok bool) {
		_, last := be.seen(p.tool)
		record(res[p.tool], &res[p.tool].remove, ok, max(0, last.Sub(t1)))
	})
	return ctx.Err()
}

func record(r *latencyResult, into *[]time.Duration, ok bool, d time.Duration) {
	if !ok {
		r.missed++
		return
	}
	*into = append(*into, d)
}

// probeAll sends requests for latService through every pipeline, one
// every probeEvery, until done says so or probeLimit passes, then calls
// report with whether done was reached.
func (g *group) probeAll(ctx context.Context, done func(*pipeline) bool, report func(*pipeline, bool)) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(probeLimit)
	for _, p := range g.pipes {
		wg.Go(func() {
			c := newClient(p.listen, latService+".localhost", p.tool, false)
			defer c.close()
			ok := false
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if ok = done(p); ok {
					break
				}
				c.do()
				time.Sleep(probeEvery)
			}
			mu.Lock()
			defer mu.Unlock()
			report(p, ok)
		})
	}
	wg.Wait()
}
