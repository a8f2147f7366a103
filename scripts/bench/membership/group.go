package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// group is the three pipelines of one proxy, run side by side: they watch
// the same agent and see the same changes at the same moment.
type group struct {
	b          *bench
	kind       *proxyKind
	pipes      []*pipeline
	structural []string       // services the structural phases added
	known      map[int]string // every worker pid seen -> command name, for the sweep
	drains     sync.WaitGroup // old-worker counts still waiting for their time
	ctx        context.Context
	cancel     context.CancelFunc // ends the waits of drains, when the group stops early
}

// groupResult is what one proxy's group measured.
type groupResult struct {
	proxy   string
	latency map[string]*latencyResult
	phases  []map[string]*phaseResult // in the order of phases
}

// runGroup measures one proxy with every tool and stops all it started.
func (b *bench) runGroup(ctx context.Context, k *proxyKind) (*groupResult, error) {
	bin, err := lookBin(k.binEnv, k.name)
	if err != nil {
		return nil, err
	}
	g := &group{b: b, kind: k, known: map[int]string{}}
	g.ctx, g.cancel = context.WithCancel(ctx)
	defer g.stop()
	b.noteEnv(k)
	for _, tool := range tools {
		p, err := b.newPipeline(k, tool, bin)
		if err != nil {
			return nil, err
		}
		g.pipes = append(g.pipes, p)
		if err := b.start(ctx, p); err != nil {
			return nil, err
		}
	}
	res := &groupResult{proxy: k.name}
	t0 := time.Now()
	fmt.Printf("%s: %d latency trials ...\n", k.name, b.o.trials)
	if res.latency, err = g.latency(ctx); err != nil {
		return res, err
	}
	for i, ph := range phases {
		fmt.Printf("%s: %s (%d changes %s apart, %d clients per pipeline) ...\n", k.name, ph.name, b.o.changes, b.o.interval, b.o.conns)
		r, err := g.runPhase(ctx, ph, fmt.Sprintf("%s%d", k.name, i))
		res.phases = append(res.phases, r)
		if err != nil {
			return res, err
		}
	}
	fmt.Printf("%s: waiting for the drain limits to count old workers ...\n", k.name)
	g.drains.Wait()
	fmt.Printf("%s: done in %s\n", k.name, time.Since(t0).Round(time.Second))
	return res, ctx.Err()
}

// stop stops every pipeline, kills what outlived them, and removes the
// services the group added (nothing watches them any more).
func (g *group) stop() {
	g.cancel()
	g.drains.Wait()
	for _, p := range g.pipes {
		p.stop()
	}
	if n := sweep(filepath.Join(g.b.dir, g.kind.name), g.known); n > 0 {
		fmt.Printf("%s: killed %d processes left after the pipelines stopped\n", g.kind.name, n)
	}
	for _, id := range g.structural {
		_ = g.b.cat.remove(id)
	}
}

var (
	envRe  = regexp.MustCompile(`env "([A-Za-z_][A-Za-z0-9_]*)"`)
	addrRe = regexp.MustCompile(`PORT|ADDR|ADMIN|LISTEN|RESOLVER|SOCKET`)
)

// noteEnv names the address settings a template reads that the bench
// does not give each pipeline: the pipelines of one proxy would share
// their defaults and clash.
func (b *bench) noteEnv(k *proxyKind) {
	set := map[string]bool{}
	for _, kv := range k.env(&pipeline{}) {
		name, _, _ := strings.Cut(kv, "=")
		set[name] = true
	}
	src, _ := os.ReadFile(b.template(k))
	var unset []string
	for _, m := range envRe.FindAllStringSubmatch(string(src), -1) {
		if !set[m[1]] && addrRe.MatchString(m[1]) && !slices.Contains(unset, m[1]) {
			unset = append(unset, m[1])
		}
	}
	if len(unset) > 0 {
		fmt.Printf("%s: note: the template reads %v, which the bench leaves to their defaults: pipelines may clash\n", k.name, unset)
	}
}
