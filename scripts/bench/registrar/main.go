// Command registrar benchmarks the registrar binary against a real Consul
// agent and the real Docker Engine, and prints the figures issue 3 asks
// for:
//
//   - burst: N containers started concurrently; time until N/N are in the
//     catalog after the last start returns, and until all are gone after
//     the last stop returns;
//   - single: start-to-visible latency p50/p99 over T trials;
//   - start-up: time to reconcile M running containers, then idle RSS/CPU;
//   - chaos: during a burst, restart Consul with its data wiped and kill -9
//     the registrar and start it again; missing/stale after one resync.
//
// Run: go run ./scripts/bench/registrar [-burst 200] [-trials 50] [-startup 500] [-chaos 100]
//
// Every container it makes is named sy-bench-<run>-… and labelled
// switchyard.bench=<run>, publishes on 127.0.0.1 only, and is removed at the
// end (and leftovers of earlier runs at the start). Every wait is bounded.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	docker "github.com/fsouza/go-dockerclient"
	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/testenv"
)

const benchLabel = "switchyard.bench"

type bench struct {
	ctx      context.Context
	logLevel string // the registrar's --log-level
	dir      string
	run      string
	node     string
	docker   *docker.Client
	image    string
	consul   *testenv.Consul
	regBin   string
	reg      *exec.Cmd
	regDone  chan struct{}
	regLog   *os.File
	resync   time.Duration

	mu  sync.Mutex
	ids []string // every container created, for cleanup
}

func main() {
	burstN := flag.Int("burst", 200, "containers in the burst")
	trials := flag.Int("trials", 50, "single-start trials")
	startupN := flag.Int("startup", 500, "running containers for the start-up measurement")
	chaosN := flag.Int("chaos", 100, "containers in the chaos burst")
	parallel := flag.Int("parallel", 200, "concurrent docker starts (the burst is fully concurrent by default)")
	only := flag.String("only", "", "run only these steps (comma list of burst,single,start-up,chaos)")
	logLevel := flag.String("log-level", "warn", "registrar's --log-level; its log is kept in "+os.TempDir()+"/switchyard-bench-registrar.log")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := setup(ctx, *logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer b.teardown()

	steps := []struct {
		name string
		fn   func() error
	}{
		{"burst", func() error { return b.burst(*burstN, *parallel) }},
		{"single", func() error { return b.single(*trials) }},
		{"start-up", func() error { return b.startup(*startupN) }},
		{"chaos", func() error { return b.chaos(*chaosN, *parallel) }},
	}
	failed := false
	for _, s := range steps {
		if ctx.Err() != nil {
			break
		}
		if *only != "" && !slices.Contains(strings.Split(*only, ","), s.name) {
			continue
		}
		fmt.Printf("\n== %s\n", s.name)
		if err := s.fn(); err != nil {
			fmt.Printf("   FAILED: %v\n", err)
			failed = true
		}
	}
	if failed {
		defer os.Exit(1)
	}
}

func setup(ctx context.Context, logLevel string) (*bench, error) {
	dir, err := os.MkdirTemp("", "switchyard-bench-")
	if err != nil {
		return nil, err
	}
	_ = os.Remove(filepath.Join(os.TempDir(), "switchyard-bench-registrar.log"))
	b := &bench{ctx: ctx, logLevel: logLevel, dir: dir, run: testenv.RandomName("r")[2:], resync: 5 * time.Second}
	b.node = "bench-" + b.run
	b.docker, err = testenv.DockerClient()
	if err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	b.removeLeftovers()
	fmt.Println("building the fixture image and registrar ...")
	if b.image, err = testenv.BuildWebappImage(b.docker); err != nil {
		return nil, err
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		return nil, err
	}
	b.regBin = filepath.Join(dir, "registrar")
	build := exec.Command("go", "build", "-o", b.regBin, "./registrar")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build registrar: %w\n%s", err, out)
	}
	bin := os.Getenv("SWITCHYARD_CONSUL")
	if bin == "" {
		home, _ := os.UserHomeDir()
		bin = filepath.Join(home, ".cache", "switchyard", "consul-"+testenv.ConsulVersion, "consul")
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("consul binary (run scripts/setup.sh or set SWITCHYARD_CONSUL): %w", err)
	}
	b.consul, err = testenv.NewConsul(bin, dir, "bench-consul")
	if err != nil {
		return nil, err
	}
	if err := b.consul.Start(); err != nil {
		return nil, err
	}
	// go-dockerclient learns the server's API version lazily and races if
	// the first starts run concurrently: do one alone.
	id, err := b.create("warmup", "x")
	if err != nil {
		return nil, err
	}
	if err := b.docker.StartContainer(id, nil); err != nil {
		return nil, err
	}
	b.removeAll([]string{id})
	fmt.Printf("consul %s at %s, docker %s, registrar node %s, resync %s\n", testenv.ConsulVersion, b.consul.Addr, b.docker.Endpoint(), b.node, b.resync)
	return b, nil
}

func (b *bench) teardown() {
	b.stopRegistrar(syscall.SIGTERM)
	b.mu.Lock()
	ids := slices.Clone(b.ids)
	b.mu.Unlock()
	fmt.Printf("\nremoving %d containers ...\n", len(ids))
	b.removeAll(ids)
	b.removeLeftovers()
	if b.consul != nil {
		b.consul.Stop()
	}
	os.RemoveAll(b.dir)
}

// removeLeftovers removes containers of any earlier run.
func (b *bench) removeLeftovers() {
	list, err := b.docker.ListContainers(docker.ListContainersOptions{All: true, Filters: map[string][]string{"label": {benchLabel}}})
	if err != nil {
		return
	}
	var ids []string
	for _, c := range list {
		ids = append(ids, c.ID)
	}
	b.removeAll(ids)
}

func (b *bench) removeAll(ids []string) {
	each(ids, 16, func(id string) error {
		return b.docker.RemoveContainer(docker.RemoveContainerOptions{ID: id, Force: true, RemoveVolumes: true})
	})
}

// each runs fn over items with at most n at a time and returns the errors.
func each[T any](items []T, n int, fn func(T) error) []error {
	errs := make([]error, len(items))
	sem := make(chan struct{}, max(n, 1))
	var wg sync.WaitGroup
	for i, it := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = fn(it)
		}()
	}
	wg.Wait()
	return errs
}

func (b *bench) create(group, svc string) (string, error) {
	name := fmt.Sprintf("sy-bench-%s-%s", b.run, testenv.RandomName(group))
	c, err := b.docker.CreateContainer(docker.CreateContainerOptions{
		Name: name,
		Config: &docker.Config{
			Image:        b.image,
			Labels:       map[string]string{benchLabel: b.run, testenv.TestLabel: "1", "SERVICE_NAME": svc},
			ExposedPorts: map[docker.Port]struct{}{"8080/tcp": {}},
		},
		HostConfig: &docker.HostConfig{
			PortBindings: map[docker.Port][]docker.PortBinding{"8080/tcp": {{HostIP: "127.0.0.1"}}},
		},
	})
	if err != nil {
		return "", fmt.Errorf("create %s: %w", name, err)
	}
	b.mu.Lock()
	b.ids = append(b.ids, c.ID)
	b.mu.Unlock()
	return c.ID, nil
}

// createN creates n stopped containers of service svc.
func (b *bench) createN(n int, group, svc string) ([]string, error) {
	ids := make([]string, n)
	errs := each(seq(n), 8, func(i int) (err error) {
		ids[i], err = b.create(group, svc)
		return err
	})
	return ids, errors.Join(errs...)
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func (b *bench) startRegistrar() error {
	logf, err := os.OpenFile(filepath.Join(os.TempDir(), "switchyard-bench-registrar.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(b.regBin, "-node-name", b.node, "-resync", strconv.Itoa(int(b.resync.Seconds())),
		"-retry-interval", "100", "-log-level", b.logLevel, "consul://"+b.consul.Addr)
	fmt.Fprintf(logf, "---- registrar started %s\n", time.Now().Format(time.RFC3339Nano))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	b.reg, b.regDone, b.regLog = cmd, done, logf
	return nil
}

func (b *bench) stopRegistrar(sig syscall.Signal) {
	if b.reg == nil {
		return
	}
	_ = b.reg.Process.Signal(sig)
	select {
	case <-b.regDone:
	case <-time.After(15 * time.Second):
		_ = b.reg.Process.Kill()
		<-b.regDone
	}
	b.regLog.Close()
	b.reg = nil
}

// count returns how many instances of svc the catalog holds.
func (b *bench) count(svc string) (int, error) {
	q := (&api.QueryOptions{}).WithContext(b.ctx)
	entries, _, err := b.consul.Client.Catalog().Service(svc, "", q)
	return len(entries), err
}

// waitCount polls the catalog until svc has want instances, every poll
// apart, for at most timeout; it returns the time it took.
func (b *bench) waitCount(svc string, want int, poll, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		n, err := b.count(svc)
		if err == nil && n == want {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			return time.Since(start), fmt.Errorf("%s: %d instances after %s, want %d (last error %v)", svc, n, timeout, want, err)
		}
		time.Sleep(poll)
	}
}

func (b *bench) burst(n, parallel int) error {
	if err := b.startRegistrar(); err != nil {
		return err
	}
	defer b.stopRegistrar(syscall.SIGTERM)
	svc := "bench-burst"
	ids, err := b.createN(n, "burst", svc)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := errors.Join(each(ids, parallel, func(id string) error { return b.docker.StartContainer(id, nil) })...); err != nil {
		return err
	}
	startTook := time.Since(t0)
	d, err := b.waitCount(svc, n, 5*time.Millisecond, 2*time.Minute)
	fmt.Printf("   %d containers started concurrently in %s\n", n, startTook.Round(time.Millisecond))
	fmt.Printf("   %d/%d in the catalog %s after the last start returned (target <= 2s)\n", n, n, d.Round(time.Millisecond))
	if err != nil {
		return err
	}
	t0 = time.Now()
	if err := errors.Join(each(ids, parallel, func(id string) error { return b.docker.StopContainer(id, 5) })...); err != nil {
		return err
	}
	stopTook := time.Since(t0)
	d, err = b.waitCount(svc, 0, 5*time.Millisecond, 2*time.Minute)
	fmt.Printf("   %d containers stopped concurrently in %s\n", n, stopTook.Round(time.Millisecond))
	fmt.Printf("   all gone from the catalog %s after the last stop returned (target <= 2s)\n", d.Round(time.Millisecond))
	b.removeAll(ids)
	return err
}

func (b *bench) single(trials int) error {
	if err := b.startRegistrar(); err != nil {
		return err
	}
	defer b.stopRegistrar(syscall.SIGTERM)
	var lat []time.Duration
	for i := range trials {
		svc := fmt.Sprintf("bench-single-%d", i)
		id, err := b.create("single", svc)
		if err != nil {
			return err
		}
		if err := b.docker.StartContainer(id, nil); err != nil {
			return err
		}
		d, err := b.waitCount(svc, 1, time.Millisecond, 10*time.Second)
		if err != nil {
			return err
		}
		lat = append(lat, d)
		b.removeAll([]string{id})
		if _, err := b.waitCount(svc, 0, 5*time.Millisecond, 10*time.Second); err != nil {
			return err
		}
	}
	slices.Sort(lat)
	fmt.Printf("   start -> visible in the catalog over %d trials: p50 %s, p99 %s, max %s (targets p50 <= 10ms, p99 <= 100ms)\n",
		trials, pct(lat, 50), pct(lat, 99), lat[len(lat)-1].Round(100*time.Microsecond))
	return nil
}

func pct(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(i, 0)].Round(100 * time.Microsecond)
}

func (b *bench) startup(n int) error {
	svc := "bench-startup"
	fmt.Printf("   starting %d containers (registrar not running) ...\n", n)
	ids, err := b.createN(n, "startup", svc)
	if err != nil {
		return err
	}
	if err := errors.Join(each(ids, 16, func(id string) error { return b.docker.StartContainer(id, nil) })...); err != nil {
		return err
	}
	t0 := time.Now()
	if err := b.startRegistrar(); err != nil {
		return err
	}
	defer b.stopRegistrar(syscall.SIGTERM)
	if _, err := b.waitCount(svc, n, 10*time.Millisecond, 2*time.Minute); err != nil {
		return err
	}
	fmt.Printf("   %d/%d reconciled %s after the registrar started (target <= 10s)\n", n, n, time.Since(t0).Round(time.Millisecond))

	// Idle: no events. The window covers a full resync (every b.resync).
	pid := b.reg.Process.Pid
	time.Sleep(2 * time.Second)
	cpu0, err := cpuTicks(pid)
	if err != nil {
		return err
	}
	window := 3 * b.resync
	time.Sleep(window)
	cpu1, _ := cpuTicks(pid)
	rss, err := rssKB(pid)
	if err != nil {
		return err
	}
	cpuSec := float64(cpu1-cpu0) / 100 // USER_HZ
	fmt.Printf("   idle with %d containers: RSS %.1f MB (target <= 40 MB), CPU %.2f%% of one core over %s incl. %d full resyncs (-resync %s)\n",
		n, float64(rss)/1024, 100*cpuSec/window.Seconds(), window, int(window/b.resync), b.resync)
	b.removeAll(ids)
	return nil
}

func cpuTicks(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the ")" of comm: state is field 3; utime 14, stime 15.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s, nil
}

func rssKB(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}

func (b *bench) chaos(n, parallel int) error {
	if err := b.startRegistrar(); err != nil {
		return err
	}
	defer b.stopRegistrar(syscall.SIGTERM)
	svc := "bench-chaos"
	ids, err := b.createN(n, "chaos", svc)
	if err != nil {
		return err
	}
	// Start the burst; a third in, wipe Consul; two thirds in, kill -9 the
	// registrar and start a new one.
	var wg sync.WaitGroup
	wg.Add(1)
	var startErr error
	go func() {
		defer wg.Done()
		startErr = errors.Join(each(ids, parallel/4+1, func(id string) error { return b.docker.StartContainer(id, nil) })...)
	}()
	time.Sleep(300 * time.Millisecond)
	b.consul.Stop()
	if err := b.consul.Start(); err != nil { // dev mode: all state is gone
		return err
	}
	b.stopRegistrar(syscall.SIGKILL)
	if err := b.startRegistrar(); err != nil {
		return err
	}
	restarted := time.Now()
	// Stop a few during the chaos too: they must not stay registered.
	stopped := ids[:n/10]
	errs := each(stopped, 8, func(id string) error { return b.docker.StopContainer(id, 5) })
	wg.Wait()
	if err := errors.Join(append(errs, startErr)...); err != nil {
		return err
	}
	// "One resync interval after the chaos": counted from the later of the
	// registrar's restart and the last docker start/stop returning. Under
	// this load the starts can outlast the interval, and checking the
	// instant they return would measure the last few registrations in
	// flight, not convergence.
	chaosEnd := time.Now()
	if chaosEnd.Before(restarted) {
		chaosEnd = restarted
	}
	time.Sleep(time.Until(chaosEnd.Add(b.resync + time.Second)))

	// Docker truth is the whole host: other containers (a demo, say) are
	// registered too and are not stale.
	list, err := b.docker.ListContainers(docker.ListContainersOptions{})
	if err != nil {
		return err
	}
	running := map[string]bool{}
	for _, c := range list {
		running[c.ID] = true
	}
	ours := ids[n/10:]
	svcs, err := b.consul.Client.Agent().ServicesWithFilter(fmt.Sprintf("Meta[%q] == %q", "registrar-node", b.node))
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	stale := 0
	for _, s := range svcs {
		cid := s.Meta["container-id"]
		if !running[cid] {
			stale++
		}
		seen[cid] = true
	}
	missing := 0
	for _, id := range ours {
		if !running[id] || !seen[id] {
			missing++
		}
	}
	inCatalog, _ := b.count(svc)
	fmt.Printf("   burst of %d, Consul restarted empty, registrar kill -9 + restart, %d stopped meanwhile\n", n, len(stopped))
	fmt.Printf("   chaos lasted %s after the registrar restart\n", chaosEnd.Sub(restarted).Round(time.Millisecond))
	fmt.Printf("   one resync interval (%s) after the chaos: %d of ours running, %d in the catalog; %d services owned on the host; missing %d, stale %d (target 0/0)\n",
		b.resync, len(ours), inCatalog, len(svcs), missing, stale)
	b.removeAll(ids)
	if missing+stale > 0 {
		return fmt.Errorf("missing %d, stale %d", missing, stale)
	}
	return nil
}
