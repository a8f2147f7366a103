package main

// Issue 9, Caddy: membership changes reach the running Caddy through the
// renderer's pool resolver, not a config load. Real Consul, the real
// renderer supervising a real Caddy with the shipped Caddyfile.tmpl, real
// requests on one keep-alive connection that a config load would close.

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

var caddyLoadChanges = flag.Int("caddy-load-changes", 20, "membership changes TestCaddyRuntimeApplyUnderKeepAliveLoad makes per mode, 250ms apart")

// cdBackend answers its name and counts its requests.
func cdBackend(t *testing.T, name string) (port int, hits *atomic.Int64) {
	t.Helper()
	hits = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port, hits
}

// cdConn is one keep-alive connection to Caddy. A config load shuts
// Caddy's HTTP servers down and closes every idle connection, so a
// request answered on it without "Connection: close" proves that no load
// happened since the connection opened.
type cdConn struct {
	c  net.Conn
	br *bufio.Reader
}

func cdDial(t *testing.T, addr string) *cdConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &cdConn{c: c, br: bufio.NewReader(c)}
}

// get sends one request for host; a failed one fails the test, since the
// connection must outlive every runtime change.
func (k *cdConn) get(t *testing.T, host string) string {
	t.Helper()
	_ = k.c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(k.c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host); err != nil {
		t.Fatalf("write on the kept connection: %v", err)
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		t.Fatalf("read on the kept connection: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close || resp.StatusCode != 200 {
		t.Fatalf("kept connection: %d %q close=%v %v", resp.StatusCode, b, resp.Close, err)
	}
	return string(b)
}

// cdNewSetup is a rig supervising Caddy with the shipped Caddyfile;
// extra are more renderer flags. Caddy's admin API, its pool resolver
// and how often the template's pools ask it are Caddy's own: the
// template reads them from the environment.
func cdNewSetup(t *testing.T, consulAddr string, extra ...string) proxyRig {
	t.Helper()
	caddy := testenv.CaddyBinary(t)
	dir := t.TempDir()
	for _, k := range []string{"HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"} {
		t.Setenv(k, dir) // caddy keeps its state under these
	}
	addrs := localAddrs(t, 4)
	admin := addrs[1]
	t.Setenv("SWITCHYARD_CADDY_ADMIN", admin)
	t.Setenv("SWITCHYARD_CADDY_RESOLVER", addrs[2])
	t.Setenv("SWITCHYARD_CADDY_REFRESH", "50ms")
	s := proxyRig{kind: "caddy", listen: addrs[0], status: addrs[3], dest: filepath.Join(dir, "Caddyfile")}
	return s.withRenderer(t, consulAddr, shippedTemplate("Caddyfile.tmpl", s.dest),
		append([]string{"--proxy", "caddy", "--caddy-bin", caddy, "--caddy-admin", admin}, extra...)...)
}

// TestCaddyRuntimeApplyEndToEnd: instances registered and deregistered in
// Consul reach the running Caddy without a config load (runtime_applies
// rises, reloads do not, one keep-alive connection stays open), requests
// reach exactly the registered instances, and a new service still reloads.
func TestCaddyRuntimeApplyEndToEnd(t *testing.T) {
	consul := testenv.StartConsul(t)
	s := cdNewSetup(t, consul.Addr)

	p1, hits1 := cdBackend(t, "web-1")
	register(t, consul.Client, "web", "web-1", p1)
	s.start(t)
	testenv.Eventually(t, 20*time.Second, expect(s.listen, "web.localhost", 200, "web-1"))
	st := s.settled(t)
	k := cdDial(t, s.listen)
	if got := k.get(t, "web.localhost"); got != "web-1" {
		t.Fatalf("answer from %s", got)
	}

	// Scale out: web-2 serves, on the same connection.
	p2, _ := cdBackend(t, "web-2")
	register(t, consul.Client, "web", "web-2", p2)
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := k.get(t, "web.localhost"); got != "web-2" {
			return fmt.Errorf("answer from %s", got)
		}
		return nil
	})
	applied := runtimeOnly(t, s, st, 1)

	// Scale in: web-1 gets no more requests.
	if err := consul.Client.Agent().ServiceDeregister("web-1"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if b, _ := os.ReadFile(s.dest); strings.Contains(string(b), fmt.Sprintf(":%d", p1)) {
			return errors.New("web-1 still in the file")
		}
		return nil
	})
	runtimeOnly(t, s, st, applied.RuntimeApplies+1)
	testenv.Eventually(t, 5*time.Second, func() error {
		before := hits1.Load()
		for range 20 {
			k.get(t, "web.localhost")
		}
		if n := hits1.Load() - before; n != 0 {
			return fmt.Errorf("web-1 got %d of 20 requests after it left", n)
		}
		return nil
	})
	for range 30 {
		if got := k.get(t, "web.localhost"); got != "web-2" {
			t.Fatalf("answer from %s after web-1 left", got)
		}
	}

	// A new service is a new route: that reloads.
	p3, _ := cdBackend(t, "api-1")
	register(t, consul.Client, "api", "api-1", p3)
	testenv.Eventually(t, 10*time.Second, expect(s.listen, "api.localhost", 200, "api-1"))
	testenv.Eventually(t, 10*time.Second, func() error {
		if now := s.now(t); now.Reloads <= st.Reloads || now.ReloadPending {
			return fmt.Errorf("a new service did not reload: %+v", now)
		}
		return nil
	})
}

// runtimeOnly waits until at least applies changes were applied at
// runtime, and checks that none reloaded, failed or fell back since base.
func runtimeOnly(t *testing.T, rig proxyRig, base runtimeProxyStatus, applies int64) runtimeProxyStatus {
	t.Helper()
	var s runtimeProxyStatus
	testenv.Eventually(t, 10*time.Second, func() error {
		if s = rig.now(t); s.RuntimeApplies < applies || s.ReloadPending {
			return fmt.Errorf("runtime applies %d, want %d: %+v", s.RuntimeApplies, applies, s)
		}
		return nil
	})
	if s.Reloads != base.Reloads || s.RuntimeFailures != 0 || s.RuntimeFallbacks != 0 || s.ReloadFailures != 0 {
		t.Fatalf("a membership change reloaded or failed: before %+v, now %+v", base, s)
	}
	return s
}

// TestCaddyRuntimeApplyUnderKeepAliveLoad is issue 9's measure for Caddy:
// 32 keep-alive connections send requests through Caddy while instances
// come and go every 250ms. With runtime apply no request fails and no
// reload happens; with --runtime-apply=false (not under -short) every
// change reloads, and the failures are logged for comparison.
func TestCaddyRuntimeApplyUnderKeepAliveLoad(t *testing.T) {
	consul := testenv.StartConsul(t)
	forEachMode(t, runtimeApplyModes(!testing.Short()), func(t *testing.T, runtimeApply bool) {
		res := cdLoadRun(t, consul, runtimeApply, *caddyLoadChanges)
		t.Logf("runtime-apply=%t: %s", runtimeApply, res)
		// Changes that come while `caddy validate` checks a render (0.1-0.7s
		// on a busy machine) reach Caddy together: one apply each batch.
		if runtimeApply && (res.failed != 0 || res.reloads != 0 || res.applies == 0) {
			t.Errorf("with runtime apply: %d failed requests, %d reloads, %d runtime applies for %d changes; want 0, 0, some",
				res.failed, res.reloads, res.applies, res.changes)
		}
	})
}

// cdLoadRun is one mode of the load test against Caddy.
func cdLoadRun(t *testing.T, consul *testenv.Consul, runtimeApply bool, changes int) loadResult {
	s := cdNewSetup(t, consul.Addr, runtimeApplyFlag(runtimeApply))
	ports := registerWebPool(t, consul)
	s.start(t)
	testenv.Eventually(t, 20*time.Second, expect(s.listen, "web.localhost", 200, "web-"))
	base := s.settled(t)

	load := startWebLoad(t, s.listen)
	churnWeb(t, consul, ports, changes, nil)
	s.settled(t) // the clients stop once the last change has reached Caddy
	return s.measure(t, load.Stop(), changes, base)
}
