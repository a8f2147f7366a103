// Package e2e runs the whole product as users run it: registrar and renderer
// as processes, a real Consul agent, real containers on the Docker Engine and
// a real nginx, with requests sent through nginx on 127.0.0.1.
package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/switchyard/switchyard/scripts/testenv"

	"github.com/switchyard/switchyard/renderer/statusdoc"
)

// holdDown is the renderer's stale-guard hold-down in these tests.
const holdDown = 2 * time.Second

// stack is one running pipeline: Consul, a registrar, a renderer
// supervising nginx.
type stack struct {
	consul    *testenv.Consul
	registrar *testenv.Process
	renderer  *testenv.Process
	listen    string // nginx's address, 127.0.0.1:PORT
	conf      string // the live nginx.conf
	status    string // the renderer's --status-addr, host:port
}

// startStack starts the pipeline; extra goes to the registrar, before its
// positional Consul URI.
func startStack(t *testing.T, extra ...string) *stack {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	testenv.Docker(t)
	testenv.NginxBinary(t)
	s := &stack{consul: testenv.StartConsul(t)}
	registrar := testenv.BuildBinary(t, "github.com/switchyard/switchyard/registrar")
	renderer := testenv.BuildBinary(t, "github.com/switchyard/switchyard/renderer")

	// A node name of the test's own: the registrar must only ever clean up
	// what it registered, so parallel tests on one engine never collide.
	node := testenv.RandomName("e2e-node")
	args := append([]string{"--node-name", node, "--resync", "5"}, extra...)
	s.registrar = testenv.StartProcess(t, "registrar", registrar, append(args, "consul://"+s.consul.Addr))

	prefix := testenv.NginxPrefix(t)
	s.conf = filepath.Join(prefix, "nginx.conf")
	s.listen = "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	s.status = "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	s.renderer = testenv.StartProcess(t, "renderer", renderer, []string{
		"--consul-addr", s.consul.Addr, "--status-addr", s.status,
		"--template", filepath.Join(root, "templates", "nginx.conf.tmpl") + ":" + s.conf,
		"--proxy", "nginx", "--proxy-mode", "supervise", "--nginx-prefix", prefix,
		"--wait", "50ms:500ms",
		// The stale guard holds a render that empties an upstream for the
		// hold-down (default 30s); a short one keeps these tests quick.
		"--hold-down", holdDown.String(),
	}, "SWITCHYARD_LISTEN="+s.listen)
	return s
}

// get sends one request for host through nginx.
func (s *stack) get(host string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+s.listen+"/", nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// backendsSeen sends n requests and returns how often each backend answered
// with 200.
func (s *stack) backendsSeen(host string, n int) (map[string]int, error) {
	seen := map[string]int{}
	for range n {
		code, body, err := s.get(host)
		if err != nil {
			return seen, err
		}
		if code != http.StatusOK {
			return seen, fmt.Errorf("status %d: %q", code, body)
		}
		seen[strings.Fields(body)[2]]++ // "hello from NAME (...)"
	}
	return seen, nil
}

func TestContainerReachesNginxThroughConsul(t *testing.T) {
	s := startStack(t)
	svc := testenv.RandomName("web")
	host := svc + ".localhost"
	labels := map[string]string{"SERVICE_NAME": svc}

	a := testenv.RunContainer(t, testenv.RunOptions{Labels: labels, Env: map[string]string{"NAME": "a"}, Ports: []string{"8080"}})
	testenv.Eventually(t, 20*time.Second, func() error {
		seen, err := s.backendsSeen(host, 1)
		if err != nil {
			return err
		}
		if seen["a"] != 1 {
			return fmt.Errorf("want backend a, saw %v", seen)
		}
		return nil
	})

	// A second instance joins the same upstream: nginx balances across both.
	testenv.RunContainer(t, testenv.RunOptions{Labels: labels, Env: map[string]string{"NAME": "b"}, Ports: []string{"8080"}})
	testenv.Eventually(t, 20*time.Second, func() error {
		seen, err := s.backendsSeen(host, 6)
		if err != nil {
			return err
		}
		if seen["a"] == 0 || seen["b"] == 0 {
			return fmt.Errorf("want both backends, saw %v", seen)
		}
		return nil
	})

	// Stopping a leaves b alone in the config, and no request fails on the way.
	stopContainer(t, a)
	portA := testenv.HostPort(a, "8080")
	testenv.Eventually(t, 20*time.Second, func() error {
		conf, err := os.ReadFile(s.conf)
		if err != nil {
			return err
		}
		if strings.Contains(string(conf), ":"+portA+" ") || strings.Contains(string(conf), ":"+portA+";") {
			return fmt.Errorf("config still routes to a's port %s", portA)
		}
		return nil
	})
	seen, err := s.backendsSeen(host, 10)
	if err != nil || seen["b"] != 10 {
		t.Fatalf("after stopping a: want 10 answers from b, saw %v (%v)", seen, err)
	}

	// Both registrar and renderer stop cleanly on SIGTERM.
	for _, p := range []*testenv.Process{s.registrar, s.renderer} {
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		code, err := p.Wait(15 * time.Second)
		if err != nil || code != 0 {
			t.Fatalf("%s on SIGTERM: exit %d, %v", p.Name, code, err)
		}
	}
}

func TestLastInstanceGoneNginxAnswers503(t *testing.T) {
	s := startStack(t)
	svc := testenv.RandomName("web")
	host := svc + ".localhost"
	ctr := testenv.RunContainer(t, testenv.RunOptions{Labels: map[string]string{"SERVICE_NAME": svc}, Ports: []string{"8080"}})
	testenv.Eventually(t, 20*time.Second, func() error {
		_, err := s.backendsSeen(host, 1)
		return err
	})

	// Removing the last instance empties the upstream: the stale guard holds
	// that render for the hold-down (Consul might be mid-election), then
	// applies it because Consul still says so.
	stopContainer(t, ctr)
	testenv.Eventually(t, 20*time.Second, func() error {
		var st statusdoc.Doc
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + s.status + "/status")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return err
		}
		if len(st.Templates) != 1 || st.Templates[0].Holds == 0 {
			return fmt.Errorf("the stale guard has not held the emptying render: %+v", st.Templates)
		}
		return nil
	})
	testenv.Eventually(t, 20*time.Second, func() error {
		code, body, err := s.get(host)
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable {
			return fmt.Errorf("want 503 once the last instance is gone, got %d %q", code, body)
		}
		return nil
	})
	if s.renderer.Exited() {
		t.Fatal("renderer exited")
	}
}

func stopContainer(t *testing.T, ctr *docker.Container) {
	t.Helper()
	c := testenv.Docker(t)
	if err := c.StopContainer(ctr.ID, 5); err != nil {
		t.Fatalf("docker stop %s: %v", ctr.Name, err)
	}
}
