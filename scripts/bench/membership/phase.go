package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sync"
	"time"
)

// phase is one load run: clients with keep-alive connections or a new
// connection per request, while the catalog changes membership only or
// structure.
type phase struct {
	name       string
	keepAlive  bool
	structural bool
}

// phases run in this order in each group: the structural ones last, since
// the services they add stay until the group ends.
var phases = []phase{
	{"keep-alive clients, membership changes", true, false},
	{"new connection per request, membership changes", false, false},
	{"keep-alive clients, structural changes", true, true},
	{"new connection per request, structural changes", false, true},
}

const (
	warmup = 500 * time.Millisecond // load before the first change
	tail   = time.Second            // load after the last change is in every file, for it to land
	settle = time.Second            // between phases

	lastChangeLimit = 30 * time.Second // bound on waiting for the last change to be rendered
)

// phaseResult is one pipeline's figures for one phase.
type phaseResult struct {
	load      loadResult
	applied   applies
	observed  bool // the proxy has worker processes to count
	spawned   int  // workers started during the phase
	perGen    int  // workers in one generation
	oldLeft   int  // old workers alive drainWait after the phase; -1 unknown
	drainWait time.Duration
	drainNote string
	obsErr    error // why no poll of the workers answered
}

// runPhase runs one phase against every pipeline of the group at once.
// Old workers are counted drainWait after it, in the background (see
// group.drains).
func (g *group) runPhase(ctx context.Context, ph phase, tag string) (map[string]*phaseResult, error) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	res, obs := map[string]*phaseResult{}, map[string]*observer{}
	before := map[string]applies{}
	for _, p := range g.pipes {
		r := &phaseResult{oldLeft: -1}
		res[p.tool], before[p.tool] = r, p.applies()
		wg.Go(func() { r.load = load(p.listen, workService+".localhost", g.b.o.conns, ph.keepAlive, stop) })
		if p.kind.workers != nil {
			o := &observer{}
			obs[p.tool], r.observed = o, true
			wg.Go(func() { o.watch(p.kind.workers(p), p.kind.poll, stop) })
		}
	}
	err := sleepCtx(ctx, warmup)
	if err == nil {
		var made []string
		made, err = g.b.change(ctx, ph.structural, tag, g.b.o.changes)
		g.structural = append(g.structural, made...)
	}
	if err == nil {
		err = g.awaitLastChange(ctx, ph, tag)
	}
	if err == nil {
		err = sleepCtx(ctx, tail)
	}
	close(stop)
	wg.Wait()
	end := time.Now()
	for _, p := range g.pipes {
		if o := obs[p.tool]; o != nil {
			o.settle(p.kind.workers(p), 10*time.Second)
		}
	}
	if !ph.structural {
		_ = g.b.cat.remove(churnID) // registered still after an odd number of changes
	}
	for _, p := range g.pipes {
		r := res[p.tool]
		r.applied = p.applies().minus(before[p.tool])
		if o := obs[p.tool]; o != nil {
			g.countOld(p, r, o, end)
		}
	}
	if err == nil {
		err = sleepCtx(ctx, settle)
	}
	return res, err
}

// awaitLastChange waits, up to lastChangeLimit, until every pipeline's
// live file shows the phase's last change, so that on a slow machine the
// changes land in the phase that made them; the tail then gives the
// proxy time to apply it.
func (g *group) awaitLastChange(ctx context.Context, ph phase, tag string) error {
	n := g.b.o.changes
	last := regexp.MustCompile(fmt.Sprintf(`127\.0\.0\.1:%d\b`, g.b.churn.port))
	want := n%2 == 1 // the churn instance is registered after an odd count
	if ph.structural {
		last, want = regexp.MustCompile(fmt.Sprintf(`\bst-%s-%d\b`, tag, n-1)), true
	}
	for _, p := range g.pipes {
		err := waitCtx(ctx, lastChangeLimit, func() error {
			b, err := os.ReadFile(p.conf)
			if err != nil || last.Match(b) != want {
				return fmt.Errorf("%s: the last change is not in %s after %s", p.name(), p.conf, lastChangeLimit)
			}
			return nil
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			fmt.Println("  note:", err)
		}
	}
	return nil
}

// countOld records the phase's new workers and, drainWait after its end,
// how many of the workers that were not current then still run.
func (g *group) countOld(p *pipeline, r *phaseResult, o *observer, end time.Time) {
	var old map[int]bool
	r.spawned, r.perGen, old = o.summary()
	if o.polls == 0 {
		r.observed, r.obsErr = false, o.lastErr
		return
	}
	for pid := range o.seen {
		g.known[pid] = p.kind.comm
	}
	r.drainWait = g.b.o.drainWait
	if r.drainWait == 0 {
		conf, _ := os.ReadFile(p.conf)
		d, ok := p.kind.drainLimit(conf)
		if !ok {
			d, r.drainNote = 10*time.Second, fmt.Sprintf("%s sets no limit on old workers", p.conf)
		}
		r.drainWait = d + time.Second
	}
	g.drains.Go(func() {
		if sleepUntil(g.ctx, end.Add(r.drainWait)) == nil {
			r.oldLeft = oldLeft(old, p.kind.comm)
		}
	})
}
