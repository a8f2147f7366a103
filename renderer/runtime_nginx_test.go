package main

// Issue 9, nginx: membership changes reach the running nginx through the
// Lua balancer's endpoint of the shipped template, not a reload. Real
// Consul, the real renderer supervising a real nginx (with Debian's Lua
// module), real requests on 127.0.0.1.

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

var (
	nginxLoadChanges = flag.Int("nginx-load-changes", 20, "membership changes TestNginxRuntimeApplyUnderKeepAliveLoad makes per mode, 250ms apart")
	nginxLoadCompare = flag.Bool("nginx-load-compare", false, "TestNginxRuntimeApplyUnderKeepAliveLoad also runs with --runtime-apply=false, for comparison")
)

// ngxNeedLua fails under CI, and skips elsewhere, when nginx has no Lua
// module: the shipped template loads it.
func ngxNeedLua(t *testing.T, bin string) {
	t.Helper()
	out, _ := exec.Command(bin, "-V").CombinedOutput()
	dir := "/usr/lib/nginx/modules"
	if m := regexp.MustCompile(`--modules-path=(\S+)`).FindSubmatch(out); m != nil {
		dir = string(m[1])
	}
	_, err := os.Stat(filepath.Join(dir, "ngx_http_lua_module.so"))
	testenv.Need(t, err == nil, "nginx Lua module in "+dir+" (Debian: libnginx-mod-http-lua, lua-resty-core)")
}

func ngxStatus(t testing.TB, addr string) runtimeProxyStatus {
	t.Helper()
	return proxyStatus(t, addr, "nginx")
}

// ngxSetup is one renderer supervising nginx with the shipped template.
type ngxSetup struct {
	listen, status string
	logs           *syncBuffer
}

func ngxNewSetup(t *testing.T, consulAddr string, extra ...string) ngxSetup {
	t.Helper()
	nginx := testenv.NginxBinary(t)
	ngxNeedLua(t, nginx)
	ports, err := testenv.PickPorts(2)
	if err != nil {
		t.Fatal(err)
	}
	s := ngxSetup{listen: fmt.Sprintf("127.0.0.1:%d", ports[0]), status: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	t.Setenv("SWITCHYARD_LISTEN", s.listen)
	// The template's default endpoint: 127.0.0.2 and the listen port.
	t.Setenv("SWITCHYARD_NGINX_API_PORT", "")
	tmpl, _ := filepath.Abs("../templates/nginx.conf.tmpl")
	dest := filepath.Join(t.TempDir(), "nginx.conf")
	s.logs = daemon(t, append([]string{"--consul-addr", consulAddr, "--template", tmpl + ":" + dest,
		"--proxy-mode", "supervise", "--nginx-bin", nginx, "--wait", "10ms:200ms", "--min-reload-gap", "0s",
		"--hold-down", "1s", "--status-addr", s.status}, extra...)...)
	return s
}

// settled waits until nginx is up with no load pending, and returns its
// status.
func (s ngxSetup) settled(t *testing.T) runtimeProxyStatus {
	t.Helper()
	return settledStatus(t, s.status, "nginx")
}

// ngxServedBy waits until n requests in a row for host are answered by
// exactly the bodies in want, each at least once.
func ngxServedBy(t *testing.T, listen, host string, n int, want ...string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		seen := map[string]int{}
		for range n {
			code, body, err := get(listen, host)
			if err != nil || code != 200 {
				return fmt.Errorf("GET %s: %d %v", host, code, err)
			}
			seen[body]++
		}
		for _, w := range want {
			if seen[w] == 0 {
				return fmt.Errorf("%d requests: %v, want only %v", n, seen, want)
			}
		}
		if len(seen) != len(want) {
			return fmt.Errorf("%d requests: %v, want only %v", n, seen, want)
		}
		return nil
	})
}

// TestNginxRuntimeApplyEndToEnd: issue 9 with the shipped template. An
// instance added to or removed from Consul reaches nginx at runtime:
// /status counts runtime applies and no reload, and requests reach the
// new instance and stop reaching the removed one. A new service is
// structural and reloads.
func TestNginxRuntimeApplyEndToEnd(t *testing.T) {
	consul := testenv.StartConsul(t)
	_, p1 := backend(t, "one")
	register(t, consul.Client, "web", "web-1", p1)
	s := ngxNewSetup(t, consul.Addr)
	testenv.Eventually(t, 15*time.Second, expect(s.listen, "web.localhost", 200, "one"))
	base := s.settled(t)

	_, p2 := backend(t, "two")
	register(t, consul.Client, "web", "web-2", p2)
	ngxServedBy(t, s.listen, "web.localhost", 20, "one", "two")
	st := s.settled(t)
	if st.RuntimeApplies <= base.RuntimeApplies || st.Reloads != base.Reloads || st.RuntimeFailures != 0 {
		t.Fatalf("after adding an instance: %+v, before %+v; want a runtime apply and no reload", st, base)
	}

	if err := consul.Client.Agent().ServiceDeregister("web-1"); err != nil {
		t.Fatal(err)
	}
	ngxServedBy(t, s.listen, "web.localhost", 20, "two")
	st2 := s.settled(t)
	if st2.RuntimeApplies <= st.RuntimeApplies || st2.Reloads != base.Reloads || st2.RuntimeFallbacks != 0 {
		t.Fatalf("after removing an instance: %+v, before %+v; want a runtime apply and no reload", st2, st)
	}

	_, p3 := backend(t, "three")
	register(t, consul.Client, "api", "api-1", p3)
	testenv.Eventually(t, 10*time.Second, expect(s.listen, "api.localhost", 200, "three"))
	if st3 := s.settled(t); st3.Reloads <= base.Reloads {
		t.Errorf("a new service did not reload: %+v", st3)
	}
	ngxServedBy(t, s.listen, "web.localhost", 10, "two")
}

// TestNginxRuntimeApplyUnderKeepAliveLoad is issue 9's measure, bounded:
// 32 keep-alive connections send requests through nginx while an
// instance is added and removed every 250ms (-nginx-load-changes times).
// Applied at runtime, no request fails and nginx never reloads. With
// -nginx-load-compare it runs again with --runtime-apply=false and logs
// both, for the README.
func TestNginxRuntimeApplyUnderKeepAliveLoad(t *testing.T) {
	modes := []bool{true}
	if *nginxLoadCompare {
		modes = append(modes, false)
	}
	for _, runtime := range modes {
		t.Run(fmt.Sprintf("runtime-apply=%v", runtime), func(t *testing.T) {
			r := ngxLoadRun(t, runtime, *nginxLoadChanges)
			// Consul and the debounce (--wait) batch some changes into
			// one render or one load: swaps, reloads and applies count
			// what reached the file and nginx.
			t.Logf("nginx, --runtime-apply=%v: %d changes, %d renders swapped; %d of %d requests failed; %d reloads, %d runtime applies, %d fallbacks; load took %s",
				runtime, r.changes, r.swaps, r.failed, r.total, r.reloads, r.applies, r.fallbacks, r.took)
			if r.total == 0 {
				t.Fatal("no request completed")
			}
			if runtime && (r.failed != 0 || r.reloads != 0 || r.applies == 0) {
				t.Errorf("with runtime apply: %+v; want no failed request and no reload", r)
			}
			if !runtime && r.reloads == 0 {
				t.Errorf("without runtime apply nothing reloaded: %+v", r)
			}
		})
	}
}

type ngxLoadResult struct {
	changes, total, failed             int
	swaps, reloads, applies, fallbacks int
	took                               string // of the loads: median and max
}

func ngxLoadRun(t *testing.T, runtime bool, changes int) ngxLoadResult {
	consul := testenv.StartConsul(t)
	ports := make([]int, 3)
	for i := range ports {
		_, ports[i] = backend(t, fmt.Sprintf("web-%d", i+1))
	}
	register(t, consul.Client, "web", "web-1", ports[0])
	register(t, consul.Client, "web", "web-2", ports[1])
	s := ngxNewSetup(t, consul.Addr, fmt.Sprintf("--runtime-apply=%v", runtime))
	ngxServedBy(t, s.listen, "web.localhost", 10, "web-1", "web-2")
	base := s.settled(t)
	swapped := s.logs.count("config swapped")

	load := testenv.StartKeepAliveLoad(s.listen, "web.localhost", 32)
	t.Cleanup(func() { load.Stop() }) // a failed step must not leave the clients running
	// An instance in, then out again: each change is membership only.
	for i := range changes {
		time.Sleep(250 * time.Millisecond) // the pace being measured, not a wait for a condition
		if i%2 == 0 {
			register(t, consul.Client, "web", "web-3", ports[2])
		} else if err := consul.Client.Agent().ServiceDeregister("web-3"); err != nil {
			t.Fatal(err)
		}
	}
	// The last change lands under load: nginx serves exactly the final
	// members (web-3 is in after an odd number of changes).
	final := []string{"web-1", "web-2"}
	if changes%2 == 1 {
		final = append(final, "web-3")
	}
	ngxServedBy(t, s.listen, "web.localhost", 20, final...)
	res := load.Stop()
	st := s.settled(t)
	return ngxLoadResult{changes: changes, total: res.Requests, failed: res.Failed,
		took: ngxLoadTimes(s.logs.String()), swaps: s.logs.count("config swapped") - swapped, reloads: int(st.Reloads - base.Reloads), applies: int(st.RuntimeApplies - base.RuntimeApplies),
		fallbacks: int(st.RuntimeFallbacks - base.RuntimeFallbacks)}
}

// ngxLoadTimes is the median and the maximum of the took= of the
// renderer's "membership applied at runtime" and "proxy reloaded" lines.
func ngxLoadTimes(log string) string {
	var ds []time.Duration
	for _, m := range regexp.MustCompile(`msg="(?:membership applied at runtime|proxy reloaded)".* took=(\S+)`).FindAllStringSubmatch(log, -1) {
		if d, err := time.ParseDuration(m[1]); err == nil {
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return "-"
	}
	slices.Sort(ds)
	return fmt.Sprintf("median %s, max %s", ds[len(ds)/2], ds[len(ds)-1])
}

// TestNginxLateRejectionRollsBack: a membership-only render goes live
// without waiting for validation (issue 9's change -> served latency) and
// is validated right after the runtime apply. When the validator rejects
// it then, the renderer puts the last proved file back and reloads it:
// nginx serves the proved members again, /status counts the rejection
// and the rollback, and a later good change still applies at runtime.
// The validator here is a --validate-cmd refusing one backend's address,
// which the membership diff cannot know about.
func TestNginxLateRejectionRollsBack(t *testing.T) {
	consul := testenv.StartConsul(t)
	_, p1 := backend(t, "one")
	_, pBad := backend(t, "refused")
	register(t, consul.Client, "web", "web-1", p1)
	s := ngxNewSetup(t, consul.Addr, "--validate-cmd", fmt.Sprintf("! grep -q '127.0.0.1:%d ' {{path}}", pBad))
	testenv.Eventually(t, 15*time.Second, expect(s.listen, "web.localhost", 200, "one"))
	s.settled(t)
	before := getStatus(t, s.status)

	register(t, consul.Client, "web", "web-bad", pBad)
	testenv.Eventually(t, 15*time.Second, func() error {
		st := getStatus(t, s.status)
		if st.Templates[0].Rejected <= before.Templates[0].Rejected || st.Proxies[0].Rollbacks <= before.Proxies[0].Rollbacks {
			return fmt.Errorf("no late rejection and rollback yet: %+v %+v", st.Templates[0], st.Proxies[0])
		}
		return nil
	})
	s.settled(t)
	ngxServedBy(t, s.listen, "web.localhost", 20, "one")

	// The refused instance leaves; a good one arrives: applied at runtime.
	if err := consul.Client.Agent().ServiceDeregister("web-bad"); err != nil {
		t.Fatal(err)
	}
	_, p2 := backend(t, "two")
	register(t, consul.Client, "web", "web-2", p2)
	ngxServedBy(t, s.listen, "web.localhost", 20, "one", "two")
	if st := getStatus(t, s.status); st.Templates[0].LastError != "" {
		t.Errorf("a good change after the rollback: last error %q", st.Templates[0].LastError)
	}
}
