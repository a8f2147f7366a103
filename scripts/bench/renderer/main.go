// Command renderer measures the renderer against consul-template's own
// binary, side by side in one run on one Consul agent:
//
//   - latency: a new service is registered; how long until each pipeline's
//     nginx serves it (p50/p90 over -trials). Both supervise their nginx:
//     ours with --proxy-mode supervise (validate, swap, reload, verify), the
//     consul-template binary with -exec nginx and SIGHUP on change (no
//     validation, no verification).
//   - burst: -burst instances registered within one second; how many
//     reloads our renderer does with --wait 100ms:1s.
//
// Run it with scripts/bench.sh renderer. Requests go only to 127.0.0.1.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/testenv"
)

func main() {
	trials := flag.Int("trials", 20, "latency trials")
	burst := flag.Int("burst", 100, "catalog changes in the burst")
	flag.Parse()
	if err := run(*trials, *burst); err != nil {
		log.Fatal(err)
	}
}

type pipeline struct {
	name   string
	prefix string
	listen string
	conf   string
	cmd    *exec.Cmd
	log    string
}

func run(trials, burst int) error {
	dir, err := os.MkdirTemp("", "switchyard-bench-renderer-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	root, err := testenv.ModuleRoot()
	if err != nil {
		return err
	}
	tmpl := filepath.Join(root, "templates", "nginx.conf.tmpl")

	consulBin, err := testenv.ConsulBinaryPath()
	if err != nil {
		return err
	}
	ctBin := os.Getenv("SWITCHYARD_CONSUL_TEMPLATE")
	if ctBin == "" {
		return errors.New("SWITCHYARD_CONSUL_TEMPLATE is not set: run scripts/bench.sh renderer (it runs setup.sh --bench)")
	}
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		return err
	}
	rendererBin, err := testenv.Build("github.com/switchyard/switchyard/renderer")
	if err != nil {
		return err
	}
	consul, err := testenv.NewConsul(consulBin, dir, "bench-renderer")
	if err != nil {
		return err
	}
	if err := consul.Start(); err != nil {
		return err
	}
	defer consul.Stop()

	var pipes []*pipeline
	defer func() {
		for _, p := range pipes {
			stop(p)
		}
	}()
	start := func(name string, mk func(prefix, conf string) []string) (*pipeline, error) {
		prefix := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Join(prefix, "logs"), 0o755); err != nil {
			return nil, err
		}
		port, err := testenv.PickPort()
		if err != nil {
			return nil, err
		}
		p := &pipeline{name: name, prefix: prefix, listen: "127.0.0.1:" + strconv.Itoa(port), conf: filepath.Join(prefix, "nginx.conf"), log: filepath.Join(prefix, name+".log")}
		args := mk(prefix, p.conf)
		p.cmd = exec.Command(args[0], args[1:]...)
		p.cmd.Env = append(os.Environ(), "SWITCHYARD_LISTEN="+p.listen, "CONSUL_HTTP_ADDR="+consul.Addr)
		logf, err := os.Create(p.log)
		if err != nil {
			return nil, err
		}
		p.cmd.Stdout, p.cmd.Stderr = logf, logf
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := p.cmd.Start(); err != nil {
			return nil, err
		}
		pipes = append(pipes, p)
		return p, testenv.WaitFor(20*time.Second, func() error { return probe(p.listen) })
	}

	ours, err := start("switchyard", func(prefix, conf string) []string {
		return []string{rendererBin, "--consul-addr", consul.Addr, "--template", tmpl + ":" + conf,
			"--proxy", "nginx", "--proxy-mode", "supervise", "--nginx-bin", nginx, "--nginx-prefix", prefix}
	})
	if err != nil {
		return fmt.Errorf("start renderer: %w", err)
	}
	theirs, err := start("consul-template", func(prefix, conf string) []string {
		return []string{ctBin, "-consul-addr", consul.Addr, "-log-level", "info", "-template", tmpl + ":" + conf,
			// "exec": consul-template runs the line through sh -c and signals
			// the process group; without it sh, not nginx, gets the SIGHUP.
			"-exec", fmt.Sprintf("exec %s -p %s -c %s -g 'daemon off;'", nginx, prefix, conf),
			"-exec-reload-signal", "SIGHUP", "-exec-kill-signal", "SIGQUIT"}
	})
	if err != nil {
		return fmt.Errorf("start consul-template: %w", err)
	}

	fmt.Printf("catalog change -> new backend served through nginx, %d trials, both pipelines watching one Consul\n", trials)
	lat := map[string][]time.Duration{}
	for i := range trials {
		name := fmt.Sprintf("bench-%d", i)
		srv, addr, err := backend(name)
		if err != nil {
			return err
		}
		defer srv.Close()
		_, portStr, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(portStr)
		reg := &api.AgentServiceRegistration{ID: name, Name: name, Address: "127.0.0.1", Port: port}
		if err := consul.Client.Agent().ServiceRegister(reg); err != nil {
			return err
		}
		t0 := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, p := range []*pipeline{ours, theirs} {
			wg.Go(func() {
				d, err := waitServed(p.listen, name+".localhost", name, t0, 15*time.Second)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					fmt.Printf("  %s trial %d: %v\n", p.name, i, err)
					return
				}
				lat[p.name] = append(lat[p.name], d)
			})
		}
		wg.Wait()
		time.Sleep(200 * time.Millisecond) // let both settle before the next change
	}
	for _, p := range []*pipeline{ours, theirs} {
		fmt.Printf("  %-16s p50 %6.1f ms  p90 %6.1f ms  (%d/%d served)\n", p.name, ms(pct(lat[p.name], 50)), ms(pct(lat[p.name], 90)), len(lat[p.name]), trials)
	}
	if len(lat[ours.name]) > 0 && len(lat[theirs.name]) > 0 {
		fmt.Printf("  ratio switchyard/consul-template: p50 %.2fx  p90 %.2fx\n",
			float64(pct(lat[ours.name], 50))/float64(pct(lat[theirs.name], 50)),
			float64(pct(lat[ours.name], 90))/float64(pct(lat[theirs.name], 90)))
	}

	// Burst: a third pipeline with the debounce users set for busy catalogs.
	burstPipe, err := start("switchyard-burst", func(prefix, conf string) []string {
		return []string{rendererBin, "--consul-addr", consul.Addr, "--template", tmpl + ":" + conf,
			"--proxy", "nginx", "--proxy-mode", "supervise", "--nginx-bin", nginx, "--nginx-prefix", prefix,
			"--wait", "100ms:1s"}
	})
	if err != nil {
		return fmt.Errorf("start burst renderer: %w", err)
	}
	// Let the start-up render settle, then count only the burst's reloads.
	time.Sleep(2 * time.Second)
	before := countLines(burstPipe.log, "proxy reloaded")
	ctBefore := countLines(theirs.log, "rendered")
	srv, addr, err := backend("burst")
	if err != nil {
		return err
	}
	defer srv.Close()
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	t0 := time.Now()
	for i := range burst {
		reg := &api.AgentServiceRegistration{ID: fmt.Sprintf("burst-%d", i), Name: "burst", Address: "127.0.0.1", Port: port, Meta: map[string]string{"i": strconv.Itoa(i)}}
		// Every instance points at one live backend: nginx accepts repeated
		// servers, and what counts here is the number of catalog changes.
		if err := consul.Client.Agent().ServiceRegister(reg); err != nil {
			return err
		}
		time.Sleep(time.Until(t0.Add(time.Duration(i+1) * time.Second / time.Duration(burst))))
	}
	spread := time.Since(t0)
	err = testenv.WaitFor(15*time.Second, func() error {
		b, err := os.ReadFile(burstPipe.conf)
		if err != nil {
			return err
		}
		if n := strings.Count(string(b), "127.0.0.1:"+portStr+" "); n < burst {
			return fmt.Errorf("%d/%d burst instances in the config", n, burst)
		}
		return nil
	})
	if err != nil {
		return err
	}
	time.Sleep(1500 * time.Millisecond) // anything still debounced lands now
	fmt.Printf("burst: %d catalog changes in %s\n", burst, spread.Round(time.Millisecond))
	fmt.Printf("  switchyard --wait 100ms:1s      reloads: %d\n", countLines(burstPipe.log, "proxy reloaded")-before)
	fmt.Printf("  consul-template (no wait)       renders (each one a SIGHUP): %d\n", countLines(theirs.log, "rendered")-ctBefore)
	return nil
}

func backend(name string) (*http.Server, string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", name)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return srv, l.Addr().String(), nil
}

// waitServed polls addr with Host host every 2ms until the body names want.
func waitServed(addr, host, want string, t0 time.Time, limit time.Duration) (time.Duration, error) {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for time.Since(t0) < limit {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
		req.Host = host
		if resp, err := client.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(b), want) {
				return time.Since(t0), nil
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s not served within %s", host, limit)
}

func probe(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func stop(p *pipeline) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	// consul-template puts its exec child in a process group of its own, so
	// an nginx can outlive it: stop that master through its pid file too.
	if b, err := os.ReadFile(filepath.Join(p.prefix, "nginx.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			// SIGTERM: the master stops its workers before it exits.
			_ = syscall.Kill(pid, syscall.SIGTERM)
			gone := func() error {
				if syscall.Kill(pid, 0) == nil {
					return errors.New("nginx still running")
				}
				return nil
			}
			if testenv.WaitFor(5*time.Second, gone) != nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

func countLines(path, substr string) int {
	b, _ := os.ReadFile(path)
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
