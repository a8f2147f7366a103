package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// design is what one way of learning "what changed" costs the mirror at
// one size: one read of the answer each change would need.
type design struct {
	services int
	dumpMB   float64       // /v1/internal/ui/nodes, the node dump (the chosen watch)
	dump     time.Duration // its read, decoded by nobody
	list     time.Duration // /v1/catalog/services (names and tags only: says nothing of instances)
	refetch  time.Duration // every /v1/health/service/:name again over 2 connections (no watch at all)
}

// measureDesigns times the candidate upstream reads against the agent.
func measureDesigns(a *agent, s int) (design, error) {
	d := design{services: s}
	tr := &http.Transport{MaxConnsPerHost: 2, MaxIdleConnsPerHost: 2}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: time.Minute}
	get := func(path string) (int, error) {
		resp, err := c.Get("http://" + a.addr + path)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		return int(n), err
	}
	start := time.Now()
	n, err := get("/v1/internal/ui/nodes")
	if err != nil {
		return d, err
	}
	d.dump, d.dumpMB = time.Since(start), float64(n)/(1<<20)
	start = time.Now()
	if _, err := get("/v1/catalog/services"); err != nil {
		return d, err
	}
	d.list = time.Since(start)
	g, _ := errgroup.WithContext(context.Background())
	g.SetLimit(2)
	start = time.Now()
	for i := range s {
		g.Go(func() error { _, err := get(fmt.Sprintf("/v1/health/service/s%05d?passing=1&stale=", i)); return err })
	}
	if err := g.Wait(); err != nil {
		return d, err
	}
	d.refetch = time.Since(start)
	return d, nil
}

func printDesigns(ds []design) {
	fmt.Printf("\nupstream reads per change, by design (one read each, this agent):\n")
	fmt.Printf("%8s %16s %10s %20s %26s\n", "services", "node dump MB", "dump", "catalog/services", "refetch all health/service")
	for _, d := range ds {
		fmt.Printf("%8d %16.2f %10s %20s %26s\n", d.services, d.dumpMB, d.dump.Round(time.Millisecond),
			d.list.Round(time.Millisecond), d.refetch.Round(time.Millisecond))
	}
}

// raiseFileLimit lets the tools (which inherit it) hold one socket per
// watched dependency at 10,000 services: the renderer holds two per
// dependency (consul-template's end and the mirror's end). Best effort:
// only a privileged bench can raise the hard limit.
func raiseFileLimit(n uint64) {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil || l.Cur >= n {
		return
	}
	want := syscall.Rlimit{Cur: n, Max: max(n, l.Max)}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
