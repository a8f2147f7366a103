package main

// Issue 9, HAProxy: membership changes reach the running HAProxy through
// its runtime API, not a reload. Real Consul, the real renderer
// supervising a real HAProxy with the shipped template, real requests.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

var (
	haproxyLoadChanges = flag.Int("haproxy-load-changes", 20, "membership changes TestHAProxyRuntimeApplyUnderKeepAliveLoad makes per mode, 250ms apart")
	haproxyLoadCompare = flag.Bool("haproxy-load-compare", false, "TestHAProxyRuntimeApplyUnderKeepAliveLoad also runs with --runtime-apply=false, for comparison")
)

// hxMasterCLI sends one command to HAProxy's master CLI socket.
func hxMasterCLI(sock, cmd string) (string, error) {
	conn, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return "", err
	}
	_ = conn.(*net.UnixConn).CloseWrite()
	b, err := io.ReadAll(conn)
	return string(b), err
}

// hxWorkerPid is the current worker's pid from "show proc".
func hxWorkerPid(t testing.TB, sock string) int {
	t.Helper()
	pid, err := hxTryWorkerPid(sock)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func hxTryWorkerPid(sock string) (int, error) {
	out, err := hxMasterCLI(sock, "show proc")
	if err != nil {
		return 0, fmt.Errorf("show proc: %w", err)
	}
	section := ""
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "#") {
			section = strings.TrimSpace(strings.TrimPrefix(line, "#"))
			continue
		}
		if f := strings.Fields(line); section == "workers" && len(f) > 1 && f[1] == "worker" {
			pid, err := strconv.Atoi(f[0])
			return pid, err
		}
	}
	return 0, fmt.Errorf("no current worker in %q", out)
}

// members is what the worker has in a backend: "name addr:port" lines.
func hxMembers(t testing.TB, sock, backend string) []string {
	t.Helper()
	out, err := hxMasterCLI(sock, "@1 show servers state "+backend)
	if err != nil {
		t.Fatalf("show servers state: %v", err)
	}
	var m []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 18 && !strings.HasPrefix(line, "#") {
			m = append(m, f[3]+" "+f[4]+":"+f[18])
		}
	}
	sort.Strings(m)
	return m
}

// hxNoKeepAlive asks each request on a connection of its own, so nothing
// the test holds keeps a stopped HAProxy busy.
var hxNoKeepAlive = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// hxReachesExactly sends rounds of requests for host and wants answers from
// every one of want and from nothing else.
func hxReachesExactly(listen, host string, want ...string) func() error {
	return func() error {
		got := map[string]int{}
		for range 4 * len(want) {
			req, _ := http.NewRequest("GET", "http://"+listen+"/", nil)
			req.Host = host
			resp, err := hxNoKeepAlive.Do(req)
			if err != nil {
				return err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got[fmt.Sprintf("%d %s", resp.StatusCode, b)]++
		}
		var w []string
		for _, s := range want {
			w = append(w, "200 "+s)
		}
		if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, slices.Sorted(slices.Values(w))) {
			return fmt.Errorf("%s answers %v, want exactly %v", host, got, want)
		}
		return nil
	}
}

// hxSetup is a rig supervising HAProxy with the shipped template, and
// the master CLI the tests ask what the worker really has.
type hxSetup struct {
	proxyRig
	sock string
}

// hxNewSetup is a rig for HAProxy; extra are more renderer flags.
func hxNewSetup(t *testing.T, consulAddr string, extra ...string) hxSetup {
	t.Helper()
	bin := testenv.HAProxyBinary(t)
	// A short dir: a unix socket path has at most 108 bytes.
	dir, err := os.MkdirTemp("", "sy-hx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	addrs := localAddrs(t, 2)
	s := proxyRig{kind: "haproxy", listen: addrs[0], status: addrs[1], dest: filepath.Join(dir, "haproxy.cfg")}
	s = s.withRenderer(t, consulAddr, shippedTemplate("haproxy.cfg.tmpl", s.dest)+":haproxy",
		append([]string{"--haproxy-bin", bin, "--hold-down", "1s"}, extra...)...)
	return hxSetup{proxyRig: s, sock: filepath.Join(dir, "haproxy-master.sock")}
}

// TestHAProxyRuntimeApplyEndToEnd: instances registered and deregistered
// in Consul reach the running HAProxy without a reload (runtime_applies
// rises, reloads and the worker do not), and requests reach exactly the
// registered instances; a new service still reloads; a runtime apply that
// fails (the worker drifted from the file) falls back to a reload that
// restores the file's members; a renderer started again on the same
// Consul gives HAProxy the same members from the file.
func TestHAProxyRuntimeApplyEndToEnd(t *testing.T) {
	consul := testenv.StartConsul(t)
	s := hxNewSetup(t, consul.Addr)
	ports := map[string]int{}
	for _, name := range []string{"one", "two", "three", "api"} {
		_, ports[name] = backend(t, name)
	}
	register(t, consul.Client, "web", "web-1", ports["one"])
	register(t, consul.Client, "web", "web-2", ports["two"])
	r := s.start(t)
	testenv.Eventually(t, 20*time.Second, hxReachesExactly(s.listen, "web.localhost", "one", "two"))
	base := s.settled(t)
	pid := hxWorkerPid(t, s.sock)

	runtimeApplied := func(t *testing.T, want ...string) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, hxReachesExactly(s.listen, "web.localhost", want...))
		testenv.Eventually(t, 5*time.Second, func() error {
			st := s.now(t)
			switch {
			case st.Reloads != base.Reloads || st.RuntimeFailures != base.RuntimeFailures:
				return fmt.Errorf("reloaded or failed: %+v (before %+v)", st, base)
			case st.RuntimeApplies <= base.RuntimeApplies || st.ReloadPending:
				return fmt.Errorf("no runtime apply yet: %+v", st)
			}
			base = st
			return nil
		})
		if now := hxWorkerPid(t, s.sock); now != pid {
			t.Errorf("worker %d replaced by %d: a reload", pid, now)
		}
	}
	t.Run("an instance registered is added at runtime", func(t *testing.T) {
		register(t, consul.Client, "web", "web-3", ports["three"])
		runtimeApplied(t, "one", "two", "three")
	})
	t.Run("an instance deregistered is removed at runtime", func(t *testing.T) {
		if err := consul.Client.Agent().ServiceDeregister("web-1"); err != nil {
			t.Fatal(err)
		}
		runtimeApplied(t, "two", "three")
	})
	t.Run("a new service reloads", func(t *testing.T) {
		register(t, consul.Client, "api", "api-1", ports["api"])
		testenv.Eventually(t, 10*time.Second, hxReachesExactly(s.listen, "api.localhost", "api"))
		testenv.Eventually(t, 5*time.Second, func() error {
			if st := s.now(t); st.Reloads <= base.Reloads || st.ReloadPending {
				return fmt.Errorf("no reload for the new backend: %+v", st)
			}
			return nil
		})
		if now := hxWorkerPid(t, s.sock); now == pid {
			t.Errorf("worker %d still serves after a structural change", pid)
		}
	})
	t.Run("a runtime apply that fails falls back to a reload", func(t *testing.T) {
		// The worker drifts from the file: a server deleted by hand.
		two := fmt.Sprintf("svc_web/127.0.0.1:%d", ports["two"])
		if out, err := hxMasterCLI(s.sock, "@1 set server "+two+" state maint; @1 del server "+two); err != nil || !strings.Contains(out, "Server deleted.") {
			t.Fatalf("del server %s: %v %q", two, err, out)
		}
		fellBack := s.now(t)
		register(t, consul.Client, "web", "web-1", ports["one"])
		testenv.Eventually(t, 10*time.Second, hxReachesExactly(s.listen, "web.localhost", "one", "two", "three"))
		testenv.Eventually(t, 5*time.Second, func() error {
			st := s.now(t)
			if st.RuntimeFailures <= fellBack.RuntimeFailures || st.RuntimeFallbacks <= fellBack.RuntimeFallbacks || st.Reloads <= fellBack.Reloads {
				return fmt.Errorf("no failed runtime apply and fallback reload: %+v (before %+v)", st, fellBack)
			}
			if !strings.Contains(st.LastRuntimeError, "the worker has no server 127.0.0.1:") {
				return fmt.Errorf("the failure does not name the missing server: %q", st.LastRuntimeError)
			}
			return nil
		})
	})
	t.Run("started again, the file gives the same members", func(t *testing.T) {
		file, _ := os.ReadFile(s.dest)
		before := hxMembers(t, s.sock, "svc_web")
		r.stop()
		testenv.Eventually(t, 20*time.Second, func() error {
			if _, err := net.DialTimeout("tcp", s.listen, time.Second); err == nil {
				return errors.New("haproxy still listens after the renderer stopped")
			}
			return nil
		})
		s.start(t)
		testenv.Eventually(t, 20*time.Second, hxReachesExactly(s.listen, "web.localhost", "one", "two", "three"))
		s.settled(t) // the master CLI answers
		if now, _ := os.ReadFile(s.dest); string(now) != string(file) {
			t.Errorf("the render changed across the restart:\n%s\nnow:\n%s", file, now)
		}
		if after := hxMembers(t, s.sock, "svc_web"); !slices.Equal(after, before) || len(after) != 3 {
			t.Errorf("members %v before the restart, %v after", before, after)
		}
	})
}

// TestHAProxyRuntimeApplyUnderKeepAliveLoad is issue 9's measure: 32
// keep-alive connections send requests through HAProxy while instances
// come and go every 250ms. With runtime apply no request fails and no
// reload happens; with -haproxy-load-compare it runs again with
// --runtime-apply=false, where changes reload, and logs the failures.
func TestHAProxyRuntimeApplyUnderKeepAliveLoad(t *testing.T) {
	consul := testenv.StartConsul(t)
	forEachMode(t, runtimeApplyModes(*haproxyLoadCompare), func(t *testing.T, runtimeApply bool) {
		res := hxLoadRun(t, consul, runtimeApply, *haproxyLoadChanges)
		t.Logf("runtime-apply=%t: %s, workers seen %d", runtimeApply, res.loadResult, res.workers)
		if runtimeApply && (res.failed != 0 || res.reloads != 0 || res.workers != 1) {
			t.Errorf("with runtime apply: %d failed requests, %d reloads, %d workers; want 0, 0, 1", res.failed, res.reloads, res.workers)
		}
		// Renders that come while one is validated are coalesced: fewer
		// applies than changes, but at least one, and the last state.
		if runtimeApply && res.applies < 1 {
			t.Errorf("no runtime apply for %d changes", res.changes)
		}
	})
}

// hxLoadResult is a load run's measure and how many HAProxy workers
// served it: a reload starts a new one.
type hxLoadResult struct {
	loadResult
	workers int
}

// hxLoadRun is one mode of the load test against HAProxy; it also notes
// every worker pid it sees, after each change and at the end.
func hxLoadRun(t *testing.T, consul *testenv.Consul, runtimeApply bool, changes int) hxLoadResult {
	s := hxNewSetup(t, consul.Addr, runtimeApplyFlag(runtimeApply))
	ports := registerWebPool(t, consul)
	s.start(t)
	testenv.Eventually(t, 20*time.Second, hxReachesExactly(s.listen, "web.localhost", "web-a", "web-b"))
	base := s.settled(t)
	workers := map[int]bool{hxWorkerPid(t, s.sock): true}

	load := startWebLoad(t, s.listen)
	churnWeb(t, consul, ports, changes, func() {
		if pid, err := hxTryWorkerPid(s.sock); err == nil { // a master re-executing does not answer
			workers[pid] = true
		}
	})
	// The clients stop once the last change has reached HAProxy.
	testenv.Eventually(t, 20*time.Second, hxReachesExactly(s.listen, "web.localhost", churnFinal(changes)...))
	s.settled(t)
	res := load.Stop()
	workers[hxWorkerPid(t, s.sock)] = true
	return hxLoadResult{loadResult: s.measure(t, res, changes, base), workers: len(workers)}
}
