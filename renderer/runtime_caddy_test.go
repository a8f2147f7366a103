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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

var caddyLoadChanges = flag.Int("caddy-load-changes", 20, "membership changes TestCaddyRuntimeApplyUnderKeepAliveLoad makes per mode, 250ms apart")

func cdStatus(t testing.TB, addr string) runtimeProxyStatus {
	t.Helper()
	return proxyStatus(t, addr, "caddy")
}

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

// cdSetup is a renderer supervising Caddy with the shipped template.
type cdSetup struct {
	listen, status, dest string
	args                 []string
}

// cdNewSetup picks ports and sets the template's environment; extra are
// more renderer flags.
func cdNewSetup(t *testing.T, consulAddr string, extra ...string) cdSetup {
	t.Helper()
	caddy := testenv.CaddyBinary(t)
	dir := t.TempDir()
	for _, k := range []string{"HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"} {
		t.Setenv(k, dir) // caddy keeps its state under these
	}
	ports, err := testenv.PickPorts(4)
	if err != nil {
		t.Fatal(err)
	}
	s := cdSetup{listen: fmt.Sprintf("127.0.0.1:%d", ports[0]), status: fmt.Sprintf("127.0.0.1:%d", ports[3]),
		dest: filepath.Join(dir, "Caddyfile")}
	admin := fmt.Sprintf("127.0.0.1:%d", ports[1])
	t.Setenv("SWITCHYARD_LISTEN", s.listen)
	t.Setenv("SWITCHYARD_CADDY_ADMIN", admin)
	t.Setenv("SWITCHYARD_CADDY_RESOLVER", fmt.Sprintf("127.0.0.1:%d", ports[2]))
	t.Setenv("SWITCHYARD_CADDY_REFRESH", "50ms")
	tmpl, _ := filepath.Abs("../templates/Caddyfile.tmpl")
	s.args = append([]string{"--consul-addr", consulAddr, "--proxy", "caddy", "--proxy-mode", "supervise",
		"--caddy-bin", caddy, "--caddy-admin", admin, "--template", tmpl + ":" + s.dest,
		"--wait", "10ms:100ms", "--min-reload-gap", "0s", "--status-addr", s.status}, extra...)
	return s
}

// settled waits until Caddy is up with every render loaded.
func (s cdSetup) settled(t *testing.T) runtimeProxyStatus {
	t.Helper()
	return settledStatus(t, s.status, "caddy")
}

// TestCaddyRuntimeApplyEndToEnd: instances registered and deregistered in
// Consul reach the running Caddy without a config load (runtime_applies
// rises, reloads do not, one keep-alive connection stays open), requests
// reach exactly the registered instances, and a new service still reloads.
func TestCaddyRuntimeApplyEndToEnd(t *testing.T) {
	consul := testenv.StartConsul(t)
	s := cdNewSetup(t, consul.Addr)
	listen, status, dest := s.listen, s.status, s.dest

	p1, hits1 := cdBackend(t, "web-1")
	register(t, consul.Client, "web", "web-1", p1)
	daemon(t, s.args...)
	testenv.Eventually(t, 20*time.Second, expect(listen, "web.localhost", 200, "web-1"))
	st := s.settled(t)
	k := cdDial(t, listen)
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
	applied := runtimeOnly(t, status, st, 1)

	// Scale in: web-1 gets no more requests.
	if err := consul.Client.Agent().ServiceDeregister("web-1"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if b, _ := os.ReadFile(dest); strings.Contains(string(b), fmt.Sprintf(":%d", p1)) {
			return errors.New("web-1 still in the file")
		}
		return nil
	})
	runtimeOnly(t, status, st, applied.RuntimeApplies+1)
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
	testenv.Eventually(t, 10*time.Second, expect(listen, "api.localhost", 200, "api-1"))
	testenv.Eventually(t, 10*time.Second, func() error {
		if s := cdStatus(t, status); s.Reloads <= st.Reloads || s.ReloadPending {
			return fmt.Errorf("a new service did not reload: %+v", s)
		}
		return nil
	})
}

// runtimeOnly waits until at least applies changes were applied at
// runtime, and checks that none reloaded, failed or fell back since base.
func runtimeOnly(t *testing.T, status string, base runtimeProxyStatus, applies int) runtimeProxyStatus {
	t.Helper()
	var s runtimeProxyStatus
	testenv.Eventually(t, 10*time.Second, func() error {
		if s = cdStatus(t, status); s.RuntimeApplies < applies || s.ReloadPending {
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
	modes := []bool{true}
	if !testing.Short() {
		modes = append(modes, false)
	}
	for _, runtimeApply := range modes {
		t.Run(fmt.Sprintf("runtime-apply=%t", runtimeApply), func(t *testing.T) {
			res := cdLoadRun(t, consul, runtimeApply, *caddyLoadChanges)
			t.Logf("runtime-apply=%t: %d changes, %d requests, %d failed %v; reloads %d, runtime applies %d",
				runtimeApply, res.changes, res.requests, res.failed, res.reasons, res.reloads, res.applies)
			// Changes that come while `caddy validate` checks a render (0.1-0.7s
			// on a busy machine) reach Caddy together: one apply each batch.
			if runtimeApply && (res.failed != 0 || res.reloads != 0 || res.applies == 0) {
				t.Errorf("with runtime apply: %d failed requests, %d reloads, %d runtime applies for %d changes; want 0, 0, some",
					res.failed, res.reloads, res.applies, res.changes)
			}
		})
	}
}

type cdLoadResult struct {
	changes, requests, failed, reloads, applies int
	reasons                                     map[string]int
}

// cdLoadRun starts a renderer, keeps two instances of "web" registered,
// adds and removes two more, one change every 250ms, under 32 keep-alive
// clients, and counts what failed.
func cdLoadRun(t *testing.T, consul *testenv.Consul, runtimeApply bool, changes int) cdLoadResult {
	s := cdNewSetup(t, consul.Addr, "--runtime-apply="+strconv.FormatBool(runtimeApply))
	ports := map[string]int{}
	for _, id := range []string{"web-a", "web-b", "web-c", "web-d"} {
		ports[id], _ = cdBackend(t, id)
	}
	register(t, consul.Client, "web", "web-a", ports["web-a"])
	register(t, consul.Client, "web", "web-b", ports["web-b"])
	t.Cleanup(func() {
		for id := range ports {
			_ = consul.Client.Agent().ServiceDeregister(id)
		}
	})
	daemon(t, s.args...)
	testenv.Eventually(t, 20*time.Second, expect(s.listen, "web.localhost", 200, "web-"))
	base := s.settled(t)

	var requests, failed atomic.Int64
	var mu sync.Mutex
	reasons := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			c := &cdLoadClient{addr: s.listen}
			defer c.close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				requests.Add(1)
				if why := c.do(); why != "" {
					failed.Add(1)
					mu.Lock()
					reasons[why]++
					mu.Unlock()
				}
			}
		})
	}
	tick := time.NewTicker(250 * time.Millisecond)
	for i := range changes {
		<-tick.C
		id := []string{"web-c", "web-d"}[(i/2)%2]
		if i%2 == 0 {
			register(t, consul.Client, "web", id, ports[id])
		} else if err := consul.Client.Agent().ServiceDeregister(id); err != nil {
			t.Error(err)
		}
	}
	tick.Stop()
	s.settled(t) // the clients stop once the last change has reached Caddy
	close(stop)
	wg.Wait()
	after := s.settled(t)
	return cdLoadResult{changes: changes, requests: int(requests.Load()), failed: int(failed.Load()), reasons: reasons,
		reloads: after.Reloads - base.Reloads, applies: after.RuntimeApplies - base.RuntimeApplies}
}

// cdLoadClient sends HTTP/1.1 requests for web on one connection and
// never retries (Go's http.Transport resends an idempotent request whose
// reused connection the server closed, which hides exactly what this
// counts). A request fails when a step fails or its status is not 200; a
// "Connection: close" answer is no failure, and the next request dials.
type cdLoadClient struct {
	addr string
	conn net.Conn
	br   *bufio.Reader
}

func (c *cdLoadClient) do() string {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			return "dial"
		}
		c.conn, c.br = conn, bufio.NewReader(conn)
	}
	_ = c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.conn, "GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\n"); err != nil {
		c.close()
		return "write"
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.close()
		return "read"
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		c.close()
	}
	switch {
	case err != nil:
		return "body"
	case resp.StatusCode != http.StatusOK:
		return "status " + strconv.Itoa(resp.StatusCode)
	}
	return ""
}

func (c *cdLoadClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}
