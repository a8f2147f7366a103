package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/renderer/statusdoc"
	"github.com/switchyard/switchyard/scripts/testenv"
)

// syncBuffer collects the daemon's log for assertions.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) count(sub string) int { return strings.Count(s.String(), sub) }

// daemon runs the renderer in-process until the test ends.
func daemon(t *testing.T, args ...string) *syncBuffer {
	t.Helper()
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- newApp(io.Discard, logs).RunContext(ctx, append([]string{"renderer"}, args...))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("renderer exited with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("renderer did not stop within 30s")
		}
		if t.Failed() {
			t.Logf("renderer log:\n%s", logs.String())
		}
	})
	return logs
}

// statusDoc is the /status document.
type statusDoc = statusdoc.Doc

// getStatus reads /status from a renderer's --status-addr (host:port).
func getStatus(t *testing.T, addr string) statusDoc {
	t.Helper()
	var st statusDoc
	code, body, err := httpGet("http://" + addr + "/status")
	if err != nil || code != 200 {
		t.Fatalf("/status: %d %v", code, err)
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status: %v", err)
	}
	return st
}

func backend(t *testing.T, body string) (addr string, port int) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	var p int
	fmt.Sscanf(srv.URL[strings.LastIndex(srv.URL, ":")+1:], "%d", &p)
	return "127.0.0.1", p
}

func register(t *testing.T, c *api.Client, name, id string, port int, tags ...string) {
	t.Helper()
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		Name: name, ID: id, Address: "127.0.0.1", Port: port, Tags: tags,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// get sends one request to nginx on 127.0.0.1 with a Host header.
func get(listen, host string) (int, string, error) {
	req, _ := http.NewRequest("GET", "http://"+listen+"/", nil)
	req.Host = host
	cl := &http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func expect(listen, host string, code int, body string) func() error {
	return func() error {
		c, b, err := get(listen, host)
		if err != nil {
			return err
		}
		if c != code || !strings.Contains(b, body) {
			return fmt.Errorf("GET %s: %d %q, want %d %q", host, c, b, code, body)
		}
		return nil
	}
}

// TestDaemonNginxSupervised drives the shipped template end to end: real
// Consul, real nginx run by the renderer, requests on 127.0.0.1.
func TestDaemonNginxSupervised(t *testing.T) {
	nginx := testenv.NginxBinary(t)
	consul := testenv.StartConsul(t)
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	t.Setenv("SWITCHYARD_LISTEN", listen)

	prefix := t.TempDir()
	dest := filepath.Join(prefix, "nginx.conf")
	tmpl, _ := filepath.Abs("../templates/nginx.conf.tmpl")

	_, p1 := backend(t, "one")
	register(t, consul.Client, "web", "web-1", p1)

	logs := daemon(t, "--consul-addr", consul.Addr, "--template", tmpl+":"+dest,
		"--proxy-mode", "supervise", "--nginx-bin", nginx, "--wait", "10ms:200ms", "--min-reload-gap", "0s",
		"--hold-down", "1s")

	testenv.Eventually(t, 15*time.Second, expect(listen, "web.localhost", 200, "one"))
	testenv.Eventually(t, 5*time.Second, expect(listen, "nothing.localhost", 503, "switchyard"))

	t.Run("change reloads and the new config serves", func(t *testing.T) {
		_, p2 := backend(t, "two")
		register(t, consul.Client, "api", "api-1", p2)
		testenv.Eventually(t, 10*time.Second, expect(listen, "api.localhost", 200, "two"))
		// nginx serves the new workers' config a moment before the
		// renderer has verified the reload and logged it.
		testenv.Eventually(t, 5*time.Second, func() error {
			if logs.count("proxy reloaded") < 1 {
				return fmt.Errorf("no reload logged")
			}
			return nil
		})
	})

	t.Run("unchanged bytes: no write, no reload", func(t *testing.T) {
		before := logs.count("proxy reloaded")
		fi1, _ := os.Stat(dest)
		// A tag change is data the template watches but does not print.
		register(t, consul.Client, "web", "web-1", p1, "v2")
		// Wait until the runner has seen it: another watched change that
		// does change the output acts as a barrier.
		_, p3 := backend(t, "three")
		register(t, consul.Client, "zeta", "zeta-1", p3)
		testenv.Eventually(t, 10*time.Second, expect(listen, "zeta.localhost", 200, "three"))
		testenv.Eventually(t, 5*time.Second, func() error {
			if logs.count("proxy reloaded") == before {
				return fmt.Errorf("the reload for zeta is not logged yet")
			}
			return nil
		})
		after := logs.count("proxy reloaded")
		if after-before != 1 {
			t.Errorf("reloads: %d, want exactly 1 (for zeta)", after-before)
		}
		fi2, _ := os.Stat(dest)
		if os.SameFile(fi1, fi2) {
			t.Errorf("zeta did not swap the file")
		}
	})

	t.Run("removed backend: 503 from the default server, nginx alive", func(t *testing.T) {
		if err := consul.Client.Agent().ServiceDeregister("api-1"); err != nil {
			t.Fatal(err)
		}
		// It empties svc_api: the stale guard holds it for --hold-down,
		// then applies it because Consul still says so.
		testenv.Eventually(t, 10*time.Second, expect(listen, "api.localhost", 503, "switchyard"))
		testenv.Eventually(t, 5*time.Second, expect(listen, "web.localhost", 200, "one"))
		if logs.count("stale guard: render removes too many backends; holding it") < 1 {
			t.Errorf("the render that empties svc_api was not held")
		}
	})
}

// TestDaemonRejectsInvalidConfig: a render nginx rejects never reaches the
// live file, the daemon survives, and the next good render goes live.
func TestDaemonRejectsInvalidConfig(t *testing.T) {
	nginx := testenv.NginxBinary(t)
	consul := testenv.StartConsul(t)
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))

	// The KV value lands in the config unquoted: an operator template
	// written carelessly, the case validation exists for.
	dir, tmpl := kvSiteTemplate(t, listen)
	kv := consul.Client.KV()
	put := func(k, v string) {
		t.Helper()
		if _, err := kv.Put(&api.KVPair{Key: k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	put("site/greeting", "hello")
	put("site/extra", "")

	prefix := filepath.Join(dir, "prefix")
	dest := filepath.Join(prefix, "nginx.conf")
	base := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	daemon(t, "--consul-addr", consul.Addr, "--template", tmpl+":"+dest, "--status-addr", base,
		"--proxy-mode", "supervise", "--nginx-bin", nginx, "--wait", "10ms:100ms", "--min-reload-gap", "0s")
	testenv.Eventually(t, 15*time.Second, expect(listen, "x", 200, "hello"))
	good, err := os.ReadFile(dest)
	if err != nil {
		t.Fatal(err)
	}

	put("site/extra", "no_such_directive on;")
	var st statusDoc
	testenv.Eventually(t, 10*time.Second, func() error {
		st = getStatus(t, base)
		if len(st.Templates) != 1 || st.Templates[0].Rejected == 0 {
			return fmt.Errorf("no rejection on /status yet: %+v", st.Templates)
		}
		return nil
	})
	now, _ := os.ReadFile(dest)
	if !bytes.Equal(now, good) {
		t.Fatalf("live file changed after a rejected render:\n%s", now)
	}
	if tm := st.Templates[0]; tm.LastErrorKind != "validation" || !strings.Contains(tm.LastError, "no_such_directive") {
		t.Errorf("nginx's explanation is not on /status: %+v", tm)
	}
	testenv.Eventually(t, 5*time.Second, expect(listen, "x", 200, "hello"))

	// The daemon is alive: the next good render goes live.
	put("site/extra", "")
	put("site/greeting", "again")
	testenv.Eventually(t, 10*time.Second, expect(listen, "x", 200, "again"))
	ents, _ := os.ReadDir(prefix)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".staged-") {
			t.Errorf("staged file left behind: %s", e.Name())
		}
	}
}

// kvSiteTemplate writes a small nginx template driven by two Consul KV keys
// and returns its dir and path. `key` blocks until a key exists, so nothing
// renders before the test puts both; site/extra lands in the config
// unquoted, so a bad value makes a config nginx rejects.
func kvSiteTemplate(t *testing.T, listen string) (dir, tmpl string) {
	t.Helper()
	dir = t.TempDir()
	tmpl = filepath.Join(dir, "site.tmpl")
	body := `pid nginx.pid;
error_log error.log;
events {}
http {
  client_body_temp_path cbt; proxy_temp_path pt; fastcgi_temp_path ft; uwsgi_temp_path ut; scgi_temp_path st;
  access_log off;
  server { listen ` + listen + `; return 200 "{{ key "site/greeting" }}\n"; {{ key "site/extra" }} }
}
`
	if err := os.WriteFile(tmpl, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, tmpl
}
