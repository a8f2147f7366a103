// Command membership measures what a change of the Consul catalog costs
// the clients of a proxy (issue 9), per proxy and per tool, side by side
// in one run on one private Consul agent. The tools:
//
//   - switchyard: the renderer with --runtime-apply (its default): a
//     change of membership only goes through the proxy's runtime
//     interface, anything else reloads;
//   - switchyard-reload: the renderer with --runtime-apply=false;
//   - consul-template: its own binary with the same template; the proxy
//     runs as the service the template's command reloads (SIGHUP to the
//     nginx master, SIGUSR2 to the HAProxy master, caddy reload).
//
// Each proxy (nginx, haproxy, and caddy when templates/Caddyfile.tmpl
// exists) gets three pipelines, one per tool, each with a proxy of its
// own on its own 127.0.0.1 port, running at once and seeing the same
// changes. Then:
//
//  1. latency, -trials times: an instance is registered, then
//     deregistered; time until each proxy sends it requests, and until
//     it sends it none (p50/p90), with a new connection per request;
//  2. four load phases: -conns clients per pipeline, keep-alive or a new
//     connection per request, during -changes changes -interval apart,
//     of membership (an instance of a 3-instance service added, removed,
//     alternately) or of structure (a new service each time). Counted:
//     requests, failed requests (a dial, write or read error, or a non-2xx
//     status; never retried, like wrk), worker processes started, old
//     workers alive after the proxy's own drain limit, and how each
//     pipeline applied the changes.
//
// Run it with scripts/bench.sh membership [flags]. It talks only to
// 127.0.0.1, every wait is bounded, and it stops every process it started,
// on error and on SIGINT/SIGTERM too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

const (
	workService = "work"       // the service the load requests
	latService  = "lat"        // the service of the latency trials
	churnID     = "work-churn" // the instance membership changes add and remove
)

type options struct {
	changes, conns, trials int
	interval, drainWait    time.Duration
	proxies                []string
	keep                   bool
}

func main() {
	var o options
	var proxies, only string
	flag.IntVar(&o.changes, "changes", 50, "catalog changes in each load phase")
	flag.DurationVar(&o.interval, "interval", 250*time.Millisecond, "time between two changes")
	flag.IntVar(&o.conns, "conns", 32, "clients (connections) per pipeline in a load phase")
	flag.IntVar(&o.trials, "trials", 20, "latency trials, one add and one remove each")
	flag.StringVar(&proxies, "proxies", "nginx,haproxy,caddy", "proxies to measure, comma-separated")
	flag.DurationVar(&o.drainWait, "drain-wait", 0, "count old workers this long after each phase (0: the proxy's own limit from its config, plus 1s)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work dir (logs and rendered files) and print its path")
	flag.StringVar(&only, "tools", strings.Join(tools, ","), "tools to run side by side, comma-separated (one alone: its latency without the others' load)")
	flag.Parse()
	o.proxies = strings.Split(proxies, ",")
	if err := pickTools(only); err != nil {
		fmt.Fprintln(os.Stderr, "membership bench:", err)
		os.Exit(2)
	}
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "membership bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "membership bench:", err)
		os.Exit(1)
	}
}

// check bounds every flag: the run must stay bounded in count and time.
func (o options) check() error {
	switch {
	case o.changes < 1 || o.changes > 1000:
		return fmt.Errorf("-changes %d: want 1-1000", o.changes)
	case o.conns < 1 || o.conns > 256:
		return fmt.Errorf("-conns %d: want 1-256", o.conns)
	case o.trials < 0 || o.trials > 500:
		return fmt.Errorf("-trials %d: want 0-500", o.trials)
	case o.interval < 10*time.Millisecond || o.interval > 10*time.Second:
		return fmt.Errorf("-interval %s: want 10ms-10s", o.interval)
	case o.drainWait < 0 || o.drainWait > 5*time.Minute:
		return fmt.Errorf("-drain-wait %s: want 0-5m", o.drainWait)
	}
	for _, name := range o.proxies {
		if kindNamed(name) == nil {
			return fmt.Errorf("-proxies: unknown proxy %q (nginx, haproxy, caddy)", name)
		}
	}
	return nil
}

// loadAvg is the machine's 1-minute load average: figures measured on a
// busy machine say so.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func kindNamed(name string) *proxyKind {
	for _, k := range kinds {
		if k.name == name {
			return k
		}
	}
	return nil
}

// run measures each proxy in turn and prints the figures of those that
// completed, also when a later one failed or the run was interrupted.
func run(ctx context.Context, o options) error {
	t0 := time.Now()
	b, err := newBench(o)
	if b != nil {
		defer b.close()
	}
	if err != nil {
		return err
	}
	var done []*groupResult
	load0 := loadAvg()
	defer func() { printResults(o, done, time.Since(t0), load0) }()
	for _, name := range o.proxies {
		k := kindNamed(name)
		if !isFile(b.template(k)) {
			fmt.Printf("%s: skipped: %s does not exist\n", name, b.template(k))
			continue
		}
		r, err := b.runGroup(ctx, k)
		if err != nil {
			if ctx.Err() != nil {
				return errors.New("interrupted")
			}
			return fmt.Errorf("%s: %w", name, err)
		}
		done = append(done, r)
	}
	return nil
}

// pickTools keeps the tools named in list, in their usual order.
func pickTools(list string) error {
	want := strings.Split(list, ",")
	for _, w := range want {
		if !slices.Contains(tools, w) {
			return fmt.Errorf("-tools: unknown tool %q (known: %s)", w, strings.Join(tools, ", "))
		}
	}
	tools = slices.DeleteFunc(tools, func(t string) bool { return !slices.Contains(want, t) })
	return nil
}
