package supervise

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul-template/manager"
	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/renderer/internal/config"
	"github.com/switchyard/switchyard/renderer/internal/funcs"
	"github.com/switchyard/switchyard/renderer/internal/logbridge"
	"github.com/switchyard/switchyard/renderer/internal/pipeline"
	"github.com/switchyard/switchyard/renderer/internal/status"
	"github.com/switchyard/switchyard/renderer/statusdoc"
	"github.com/switchyard/switchyard/scripts/testenv"
)

// connLimit is the agent's http_max_conns_per_client in these tests: low,
// so a template over a few dozen services is enough to exceed it.
const connLimit = 20

// startLimitedConsul runs a dev agent at a low connection limit per
// client address.
func startLimitedConsul(t *testing.T) (*api.Client, string) {
	t.Helper()
	c := testenv.StartConsulLimited(t, connLimit)
	return c.Client, c.Addr
}

// register adds services name-0 .. name-(n-1), one instance each, retrying
// each call: the test's own client shares the agent's per-address limit
// with the renderer it is starving.
func register(t *testing.T, c *api.Client, prefix string, n int, deregister bool) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("%s-%02d", prefix, i)
		testenv.Eventually(t, 30*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if deregister {
				return c.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
			}
			return c.Agent().ServiceRegisterOpts(&api.AgentServiceRegistration{ID: id, Name: id,
				Address: "10.0.0." + strconv.Itoa(i+1), Port: 80}, api.ServiceRegisterOpts{}.WithContext(ctx))
		})
	}
}

// runReal runs the supervisor as the renderer wires it, with the real
// consul-template runner, one template without a proxy, and the status
// handler; it returns the handler's URL and the destination.
func runReal(t *testing.T, addr, tmpl string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	src, dest := filepath.Join(dir, "t.tmpl"), filepath.Join(dir, "out.conf")
	if err := os.WriteFile(src, []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	tpl, err := config.ParseTemplate(src+":"+dest, config.ProxyNone)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Consul: config.Consul{Addr: addr, RetryMaxBackoff: time.Second},
		Templates: []config.Template{tpl}, Proxy: config.ProxyNone, ProxyMode: config.ModeExternal,
		Keep: 2, MaxRemoval: 0, CommandTimeout: 5 * time.Second, MaxProxyDeaths: 1}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// consul-template logs through the global log package: keep it out
	// of the test's output.
	bridge := logbridge.New(slog.New(slog.DiscardHandler), logbridge.Options{})
	t.Cleanup(bridge.Restore)
	ctx, cancel := context.WithCancel(context.Background())
	rec := status.NewRecorder(nil)
	rec.AddTemplate(src, dest, "")
	pipe := pipeline.New(ctx, pipeline.Options{Timeout: 5 * time.Second, Status: rec},
		[]pipeline.Target{{Template: src, Dest: dest, Keep: 2}})
	fm := funcs.Map()
	sup := New(Options{Pipeline: pipe, Proxies: map[string]Reloader{}, Status: rec, ConsulUp: cfg.ConsulProbe(),
		NewEngine: func() (Engine, error) {
			r, err := manager.NewRunner(cfg.ConsulTemplate(pipe.Render, fm), false)
			if err != nil {
				return nil, err
			}
			return NewEngine(r, nil), nil
		}})
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx) }()
	srv := httptest.NewServer(status.Handler(rec, nil))
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
		srv.Close()
	})
	return srv.URL, dest
}

// statusDoc is the /status document.
type statusDoc = statusdoc.Doc

func getStatus(url string) (statusDoc, error) {
	var d statusDoc
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/status", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return d, err
	}
	defer resp.Body.Close()
	return d, json.NewDecoder(resp.Body).Decode(&d)
}

// Issue 11: the renderer has rendered; then every connection the agent
// allows our address is taken (as a large catalog's watches take them),
// and a service appears. consul-template needs a new connection for it,
// the agent answers 429, and no complete render is possible: /status says
// so (refusals by reason, dependencies without data), /ready turns false,
// /metrics counts it, and the refusals are not an outage (no runner
// rebuild, Consul not down). Once connections free up, the render
// completes and the renderer is ready again. Before the fix /ready stayed
// 200 and /status had no trace of the refusals. When every dependency
// got its data but the watches stay refused, /ready turns false after
// status.RefusedFor instead (see starveWithLateServices).
func TestConsulRefusalMakesUnready(t *testing.T) {
	c, addr := startLimitedConsul(t)
	register(t, c, "small", 5, false)
	url, dest := runReal(t, addr, "{{ range services }}{{ range service .Name }}{{ .Name }} {{ .Address }}\n{{ end }}{{ end }}")
	testenv.Eventually(t, 30*time.Second, func() error {
		if b, _ := os.ReadFile(dest); !strings.Contains(string(b), "small-04 ") {
			return fmt.Errorf("first render: %q", b)
		}
		if d, err := getStatus(url); err != nil || !d.Ready {
			return fmt.Errorf("not ready after the first render: %+v %v", d, err)
		}
		return nil
	})
	hogs := hogConnections(t, addr)
	late := starveWithLateServices(t, url, hogs[0])
	assertMetric(t, url, `switchyard_renderer_consul_throttled `)
	if d, _ := getStatus(url); d.Runner.OutageRebuilds != 0 || d.Runner.ConsulDownSince != nil {
		t.Fatalf("refusals taken for an outage: %+v", d)
	}
	for _, h := range hogs {
		h.Close()
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		d, err := getStatus(url)
		b, _ := os.ReadFile(dest)
		for _, name := range late {
			if !strings.Contains(string(b), name+" ") {
				return fmt.Errorf("%s not rendered: %q", name, b)
			}
		}
		if err != nil || !d.Ready || d.Runner.ConsulThrottledSince != nil || d.Runner.MissingDependencies != 0 {
			return fmt.Errorf("not ready again: %+v %v", d, err)
		}
		return nil
	})
}

// starveWithLateServices registers new services past the hogs, each a
// new watch wanting a connection at once, and waits for /status to report
// the renderer refused; it returns their names. Which way depends on
// timing: a watch's first query answers at once, so a connection the
// renderer was just handed back (its services watch returning for the new
// services) can carry several first queries before a blocking query holds
// it. Either some dependency is left without data (unready at once), or
// every one has data and the refused watches, the services list among
// them, go blind (unready after status.RefusedFor). A stress run saw the
// second, and /ready stayed true before the fix.
func starveWithLateServices(t *testing.T, url string, via net.Conn) []string {
	t.Helper()
	const lateServices = 6
	var late []string
	for i := range lateServices {
		name := fmt.Sprintf("late-%d", i)
		putService(t, via, name)
		late = append(late, name)
	}
	testenv.Eventually(t, status.RefusedFor+15*time.Second, func() error {
		d, err := getStatus(url)
		if err != nil {
			return err
		}
		if d.Ready || d.Runner.ConsulThrottled[status.Throttle429]+d.Runner.ConsulThrottled[status.ThrottleConnReset] == 0 ||
			d.Runner.ConsulThrottledSince == nil || !strings.Contains(d.Reason, "consul refuses") {
			return fmt.Errorf("not reported as refused: %+v", d)
		}
		t.Logf("refused: %s", d.Reason)
		return nil
	})
	return late
}

// hogConnections opens connections to the agent until it refuses one
// (it writes its 429 on accept), so every slot our address has is taken.
func hogConnections(t *testing.T, addr string) []net.Conn {
	t.Helper()
	var hogs []net.Conn
	t.Cleanup(func() {
		for _, h := range hogs {
			h.Close()
		}
	})
	for range connLimit + 1 {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		// An accepted connection stays silent; a refused one has its
		// 429 at once.
		_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 12)
		if n, _ := conn.Read(buf); n > 0 {
			conn.Close()
			if len(hogs) == 0 {
				t.Fatalf("agent refused the first connection: %q", buf[:n])
			}
			return hogs
		}
		_ = conn.SetReadDeadline(time.Time{})
		hogs = append(hogs, conn)
	}
	t.Fatalf("agent accepted %d connections; its limit is %d", len(hogs), connLimit)
	return nil
}

// putService registers a service over conn, a connection the agent has
// accepted: every other one would be refused.
func putService(t *testing.T, conn net.Conn, name string) {
	t.Helper()
	body := fmt.Sprintf(`{"ID":%q,"Name":%q,"Address":"10.0.1.1","Port":80}`, name, name)
	req, _ := http.NewRequest(http.MethodPut, "http://"+conn.RemoteAddr().String()+"/v1/agent/service/register", strings.NewReader(body))
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("register %s: %s", name, resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
}

// assertMetric checks that /metrics has sample with a value above 0.
func assertMetric(t *testing.T, url, sample string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body strings.Builder
	if _, err := io.Copy(&body, resp.Body); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, sample); ok && strings.TrimSpace(v) != "0" {
			return
		}
	}
	t.Fatalf("no %s above 0 in /metrics", sample)
}
