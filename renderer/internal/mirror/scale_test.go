package mirror

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/scripts/testenv"
)

const scaleTemplate = `{{ range services }}{{ $n := .Name }}{{ range service .Name }}{{ $n }} {{ .Address }}:{{ .Port }}
{{ end }}{{ end }}`

// register puts n services x 3 instances on the agent, 16 calls at a time.
func register(t *testing.T, c *api.Client, n int) {
	t.Helper()
	g := errgroup.Group{}
	g.SetLimit(16)
	for i := range n {
		for j := range 3 {
			g.Go(func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				return c.Agent().ServiceRegisterOpts(&api.AgentServiceRegistration{
					ID: fmt.Sprintf("s%05d-%d", i, j), Name: fmt.Sprintf("s%05d", i),
					Address: fmt.Sprintf("10.%d.%d.%d", i/250, i%250, j+1), Port: 8080,
				}, api.ServiceRegisterOpts{}.WithContext(ctx))
			})
		}
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

func lines(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "\n")
}

// TestMirrorRendersPastTheConnectionLimit: 300 services x 3 on an agent at
// default limits (200 connections per client address), where
// consul-template alone never completes a render. Through the mirror it
// does, never holding more than 4 connections to the agent, and follows a
// one-instance change: with consul-template watching every service
// through the mirror, and with service read inline.
func TestMirrorRendersPastTheConnectionLimit(t *testing.T) {
	for _, inline := range []bool{false, true} {
		t.Run(map[bool]string{false: "watched", true: "inline"}[inline], func(t *testing.T) { rendersPastTheLimit(t, inline) })
	}
}

func rendersPastTheLimit(t *testing.T, inline bool) {
	const services = 300
	client, addr, closeIdle := startDefaultConsul(t)
	register(t, client, services)
	closeIdle()
	port, _ := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
	// Nothing else of ours may hold connections to the agent now.
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := connsTo(t, port); n > 0 {
			return fmt.Errorf("%d connections to the agent before the mirror started", n)
		}
		return nil
	})

	ctx, cancel := context.WithCancel(context.Background())
	sampled := peakConns(ctx, t, port, 5*time.Millisecond) // while the render runs
	m, mirrorAddr := serveMirror(t, addr)
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "scale.tmpl"), filepath.Join(dir, "scale.out")
	if err := os.WriteFile(src, []byte(scaleTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var via *Mirror
	if inline {
		via = m
	}
	runner(t, mirrorAddr, false, via, src, dst)
	want := 3*services + 1 // and the agent's own consul service
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := lines(dst); n < want {
			return fmt.Errorf("%d of %d instances rendered", n, want)
		}
		return nil
	})
	first := time.Since(start)
	// The change below comes through this test's own client: stop
	// counting connections to the agent first.
	cancel()
	peak := <-sampled

	start = time.Now()
	if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "s00007-9", Name: "s00007", Address: "10.99.0.1", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if b, _ := os.ReadFile(dst); !strings.Contains(string(b), "s00007 10.99.0.1:8080") {
			return fmt.Errorf("new instance not rendered yet")
		}
		return nil
	})
	change := time.Since(start)
	t.Logf("%d services x 3: first complete render %s, one-instance change in the file %s, peak connections to the agent %d",
		services, first.Round(time.Millisecond), change.Round(time.Millisecond), peak)
	if peak > MaxUpstreamConns {
		t.Fatalf("peak connections to the agent: %d, want at most %d", peak, MaxUpstreamConns)
	}
	if n := m.UpstreamConns(); n > MaxUpstreamConns {
		t.Fatalf("mirror's open upstream connections: %d", n)
	}
}

// unixGet asks the mirror at addr (unix://PATH) directly.
func unixGet(t *testing.T, addr, path string) (int, string, string) {
	t.Helper()
	sock := strings.TrimPrefix(addr, "unix://")
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://mirror" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = fmt.Fprint(&b, readAll(resp))
	return resp.StatusCode, b.String(), resp.Header.Get("X-Consul-Index")
}

func readAll(resp *http.Response) string {
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			return sb.String()
		}
	}
}

// TestMirrorSurvivesAgentRestart: the agent dies (last-known data still
// served, blocking queries and the leader probe fail, the file keeps its
// content), then comes back with its data wiped and is followed again,
// with indexes that kept moving forward.
func TestMirrorSurvivesAgentRestart(t *testing.T) {
	c := testenv.StartConsul(t)
	web := func(addr string) {
		for i := range 2 {
			if err := c.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: fmt.Sprintf("web-%d", i),
				Name: "web", Address: addr, Port: 8080 + i}); err != nil {
				t.Fatal(err)
			}
		}
	}
	web("10.0.0.1")
	m, mirrorAddr := serveMirror(t, c.Addr)
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "web.tmpl"), filepath.Join(dir, "web.out")
	if err := os.WriteFile(src, []byte(`{{ range service "web" }}{{ .Address }}:{{ .Port }}
{{ end }}`), 0o644); err != nil {
		t.Fatal(err)
	}
	runner(t, mirrorAddr, false, nil, src, dst)
	const before = "10.0.0.1:8080\n10.0.0.1:8081\n"
	testenv.Eventually(t, 10*time.Second, func() error {
		if b, _ := os.ReadFile(dst); string(b) != before {
			return fmt.Errorf("rendered %q", b)
		}
		return nil
	})
	_, _, idx0 := unixGet(t, mirrorAddr, "/v1/health/service/web?passing=1&stale=")

	c.Stop()
	testenv.Eventually(t, 10*time.Second, func() error {
		if code, _, _ := unixGet(t, mirrorAddr, "/v1/status/leader"); code != http.StatusServiceUnavailable {
			return fmt.Errorf("status/leader %d with the agent down", code)
		}
		return nil
	})
	code, body, _ := unixGet(t, mirrorAddr, "/v1/health/service/web?passing=1&stale=")
	if code != 200 || !strings.Contains(body, "10.0.0.1") {
		t.Fatalf("index-0 query with the agent down: %d %q, want last-known data", code, body)
	}
	if code, _, _ := unixGet(t, mirrorAddr, "/v1/health/service/web?passing=1&stale=&index="+idx0); code != http.StatusInternalServerError {
		t.Fatalf("blocking query with the agent down: %d, want 500", code)
	}
	if b, _ := os.ReadFile(dst); string(b) != before {
		t.Fatalf("file changed while the agent was down: %q", b)
	}

	if err := c.Start(); err != nil { // data wiped: the registrar registers again
		t.Fatal(err)
	}
	web("10.0.0.2")
	testenv.Eventually(t, 20*time.Second, func() error {
		if b, _ := os.ReadFile(dst); string(b) != "10.0.0.2:8080\n10.0.0.2:8081\n" {
			return fmt.Errorf("rendered %q after the restart", b)
		}
		return nil
	})
	_, _, idx1 := unixGet(t, mirrorAddr, "/v1/health/service/web?passing=1&stale=")
	a, _ := strconv.ParseUint(idx0, 10, 64)
	b, _ := strconv.ParseUint(idx1, 10, 64)
	if b <= a {
		t.Fatalf("mirror index went %d -> %d across the restart", a, b)
	}
	if n := m.UpstreamConns(); n > MaxUpstreamConns {
		t.Fatalf("%d upstream connections", n)
	}
}
