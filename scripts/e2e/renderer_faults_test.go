package e2e

// Fault injection against the renderer, end to end: the renderer runs as a
// real process (built from source, with -race when the tests run under it)
// against a real Consul agent, feeding a real nginx or HAProxy on
// 127.0.0.1, and the tests break what is around it: they kill -9 the proxy
// master, fill or freeze the destination filesystem, hang the validator,
// fail a validation when a held render is applied, make a reload fail after
// a valid check, and break the template under a running daemon. Every
// assertion reads /status, /ready, /metrics, exit codes, the live file or
// real HTTP answers through the proxy; never the renderer's log text.
//
// Every helper here starts with "fault" (the package shares its namespace
// with the other e2e files).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// KV keys the fault templates read. Each test has a Consul agent of its
// own (or, for subtests, keys it does not share), so fixed keys are fine.
const (
	faultKeyGen    = "switchyard-fault/gen"    // X-Fault-Gen header: which render serves
	faultKeyListen = "switchyard-fault/listen" // listen address (default: $FAULT_LISTEN)
)

// faultNginxTemplate is a small nginx config template: one upstream for
// $FAULT_SERVICE (a placeholder server when it has no instance, which the
// stale guard does not count), an optional one for $FAULT_EXTRA, a listen
// address from Consul KV and a header that says which render serves. Every
// path is relative to the prefix. header is an extra add_header value
// ("" for none), for template edits.
func faultNginxTemplate(header string) string {
	extra := ""
	if header != "" {
		extra = "\n        add_header X-Fault-Template \"" + header + "\" always;"
	}
	return `pid nginx.pid;
error_log error.log warn;
worker_processes 1;
worker_shutdown_timeout 5s;
events { worker_connections 128; }
http {
    access_log off;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;
    upstream svc_app {
{{- range service (env "FAULT_SERVICE") }}
        server {{ .Address }}:{{ .Port }};
{{- else }}
        server 127.0.0.1:65535; # no instance
{{- end }}
    }
{{- with service (env "FAULT_EXTRA") }}
    upstream svc_extra {
{{- range . }}
        server {{ .Address }}:{{ .Port }};
{{- end }}
    }
{{- end }}
    server {
        listen {{ keyOrDefault "` + faultKeyListen + `" (env "FAULT_LISTEN") }};
        add_header X-Fault-Gen "{{ keyOrDefault "` + faultKeyGen + `" "0" }}" always;` + extra + `
        location / { proxy_pass http://svc_app; }
{{- with service (env "FAULT_EXTRA") }}
        location /extra/ { proxy_pass http://svc_extra; }
{{- end }}
    }
}
`
}

// faultHAProxyTemplate is the HAProxy counterpart: one frontend on
// $FAULT_LISTEN, one backend with the instances of $FAULT_SERVICE.
const faultHAProxyTemplate = `global
    hard-stop-after 5s

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s

frontend http
    bind {{ env "FAULT_LISTEN" }}
    http-response set-header X-Fault-Gen "{{ keyOrDefault "` + faultKeyGen + `" "0" }}"
    default_backend app

backend app
{{- range service (env "FAULT_SERVICE") }}
    server {{ .ID }} {{ .Address }}:{{ .Port }}
{{- else }}
    server none 127.0.0.1:65535
{{- end }}
`

// faultRegister registers b as an instance of svc through the agent API,
// as a registrar does (no check: passing).
func faultRegister(t *testing.T, c *testenv.Consul, svc string, b *backend) {
	t.Helper()
	reg := &api.AgentServiceRegistration{ID: svc + "-" + b.name, Name: svc, Address: "127.0.0.1", Port: b.port}
	if err := c.Client.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("register %s: %v", reg.ID, err)
	}
}

func faultDeregister(t *testing.T, c *testenv.Consul, svc string, b *backend) {
	t.Helper()
	if err := c.Client.Agent().ServiceDeregister(svc + "-" + b.name); err != nil {
		t.Fatalf("deregister %s-%s: %v", svc, b.name, err)
	}
}

func faultPut(t *testing.T, c *testenv.Consul, key, value string) {
	t.Helper()
	if _, err := c.Client.KV().Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
		t.Fatalf("kv put %s: %v", key, err)
	}
}

// faultOpts describes one renderer process.
type faultOpts struct {
	proxy    string // nginx | haproxy | none
	mode     string // supervise | external ("" = supervise for a proxy)
	tmpl     string // template text (written to a file of the test's own) ...
	tmplPath string // ... or an existing template file
	prefix   string // dir of the live file (and nginx's prefix); "" = a new temp dir
	service  string // $FAULT_SERVICE
	extra    string // $FAULT_EXTRA ("" = a name nobody registers)
	args     []string
}

// faultHost is one renderer process with its status server and the proxy
// it feeds on listen.
type faultHost struct {
	proc       *testenv.Process
	statusAddr string
	listen     string
	conf       string // the live file
	prefix     string
	tmplPath   string
	client     *http.Client
}

// faultStart starts a renderer and waits until its status server answers.
func faultStart(t *testing.T, c *testenv.Consul, o faultOpts) *faultHost {
	t.Helper()
	bin := testenv.BuildBinary(t, "github.com/switchyard/switchyard/renderer")
	if o.prefix == "" {
		o.prefix = testenv.NginxPrefix(t)
	}
	if o.mode == "" {
		o.mode = "supervise"
	}
	if o.extra == "" {
		o.extra = testenv.RandomName("fault-unused")
	}
	h := &faultHost{
		statusAddr: "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
		listen:     "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
		prefix:     o.prefix,
		tmplPath:   o.tmplPath,
		// A new connection per request: keep-alive clients lose requests
		// across reloads (COMPAT §3); that is not what these tests measure.
		client: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	if h.tmplPath == "" {
		h.tmplPath = filepath.Join(t.TempDir(), "fault.tmpl")
		if err := os.WriteFile(h.tmplPath, []byte(o.tmpl), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"--consul-addr", c.Addr, "--status-addr", h.statusAddr, "--proxy", o.proxy}
	switch o.proxy {
	case "nginx":
		h.conf = filepath.Join(o.prefix, "nginx.conf")
		args = append(args, "--proxy-mode", o.mode, "--nginx-bin", testenv.NginxBinary(t), "--nginx-prefix", o.prefix)
	case "haproxy":
		h.conf = filepath.Join(o.prefix, "haproxy.cfg")
		args = append(args, "--proxy-mode", o.mode, "--haproxy-bin", testenv.HAProxyBinary(t))
	default:
		h.conf = filepath.Join(o.prefix, "out.conf")
	}
	args = append(args, "--template", h.tmplPath+":"+h.conf)
	args = append(args, o.args...)
	// Registered before StartProcess, so they run after the process has
	// stopped: the race detector's verdict, and whatever the renderer left
	// in its process group (a validator's child that outlived its
	// timeout), which must not outlive the test.
	t.Cleanup(func() {
		if h.proc == nil {
			return
		}
		faultKillGroupLeftovers(h.proc.Cmd.Process.Pid)
		if strings.Contains(h.proc.Log(), "WARNING: DATA RACE") {
			t.Errorf("the race detector reported a data race in the renderer (see its log)")
		}
	})
	h.proc = testenv.StartProcess(t, "renderer", bin, args,
		"FAULT_LISTEN="+h.listen, "FAULT_SERVICE="+o.service, "FAULT_EXTRA="+o.extra)
	testenv.Eventually(t, 30*time.Second, func() error {
		if h.proc.Exited() {
			return errors.New("renderer exited at start")
		}
		code, _, err := h.httpGet("/healthz")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("/healthz: %d", code)
		}
		return nil
	})
	return h
}

// faultKillGroupLeftovers SIGKILLs what is left in process group pgid once
// its leader is gone (only if some process is still in it).
func faultKillGroupLeftovers(pgid int) {
	for _, p := range testenv.Procs() {
		if p.PGrp == pgid && p.State != 'Z' {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			return
		}
	}
}

func (h *faultHost) pid() int { return h.proc.Cmd.Process.Pid }

// httpGet asks the renderer's status server.
func (h *faultHost) httpGet(path string) (int, string, error) {
	resp, err := h.client.Get("http://" + h.statusAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// faultStatus is the /status document (the fields these tests read).
type faultStatus struct {
	rendererStatus // the document, as the resilience tests read it
	raw            string
}

// status reads /status; it insists on exactly one template and at most
// one proxy, the shape every test here runs.
func (h *faultHost) status() (*faultStatus, error) {
	code, body, err := h.httpGet("/status")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("/status: %d: %s", code, body)
	}
	var s faultStatus
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		return nil, fmt.Errorf("/status: %w: %s", err, body)
	}
	if len(s.Templates) != 1 || len(s.Proxies) > 1 {
		return nil, fmt.Errorf("/status: want 1 template and at most 1 proxy: %s", body)
	}
	s.raw = body
	return &s, nil
}

// mustStatus reads /status or fails the test.
func (h *faultHost) mustStatus(t *testing.T) *faultStatus {
	t.Helper()
	s, err := h.status()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitStatus polls /status until cond accepts it; on timeout the test
// fails with cond's last complaint and the last /status seen.
func (h *faultHost) waitStatus(t *testing.T, timeout time.Duration, cond func(*faultStatus) error) *faultStatus {
	t.Helper()
	var last *faultStatus
	err := testenv.WaitFor(timeout, func() error {
		s, err := h.status()
		if err != nil {
			return err
		}
		last = s
		return cond(s)
	})
	if err != nil {
		raw := "(none)"
		if last != nil {
			raw = last.raw
		}
		t.Fatalf("/status condition not met within %s: %v\nlast /status:\n%s", timeout, err, raw)
	}
	return last
}

// ready returns /ready's status code and body.
func (h *faultHost) ready() (int, string) {
	code, body, err := h.httpGet("/ready")
	if err != nil {
		return 0, err.Error()
	}
	return code, strings.TrimSpace(body)
}

// metrics scrapes /metrics and returns our families, each summed over its
// samples (every test here has one template and at most one proxy).
func (h *faultHost) metrics() (map[string]float64, error) {
	code, body, err := h.httpGet("/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("/metrics: %w", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		short, ok := strings.CutPrefix(name, "switchyard_renderer_")
		if !ok {
			continue
		}
		for _, m := range f.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				out[short] += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[short] += m.GetGauge().GetValue()
			}
		}
	}
	return out, nil
}

// faultAnswer is one answer through the proxy.
type faultAnswer struct {
	code     int
	from     string // backend that answered ("" if the proxy answered itself)
	gen      string // X-Fault-Gen
	template string // X-Fault-Template
}

// get sends one request through the proxy to addr ("" = h.listen).
func (h *faultHost) get(addr, path string) (faultAnswer, error) {
	if addr == "" {
		addr = h.listen
	}
	resp, err := h.client.Get("http://" + addr + path)
	if err != nil {
		return faultAnswer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return faultAnswer{}, err
	}
	from, _ := strings.CutPrefix(strings.TrimSpace(string(b)), "hello from ")
	if !strings.HasPrefix(string(b), "hello from ") {
		from = ""
	}
	return faultAnswer{code: resp.StatusCode, from: from,
		gen: resp.Header.Get("X-Fault-Gen"), template: resp.Header.Get("X-Fault-Template")}, nil
}

// serves checks that a request through the proxy reaches backend want
// (any backend when want is "") with X-Fault-Gen gen (any when "").
func (h *faultHost) serves(want, gen string) error {
	a, err := h.get("", "/")
	if err != nil {
		return err
	}
	if a.code != http.StatusOK || a.from == "" || (want != "" && a.from != want) || (gen != "" && a.gen != gen) {
		return fmt.Errorf("through the proxy: status %d from %q gen %q; want 200 from %q gen %q", a.code, a.from, a.gen, want, gen)
	}
	return nil
}

func (h *faultHost) live(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(h.conf)
	if err != nil {
		t.Fatalf("live file: %v", err)
	}
	return b
}

// faultProxyMaster finds the proxy master the renderer (pid parent) runs:
// its child named comm that has live children of its own (a validation
// run, `nginx -t` or `haproxy -c`, has none). It returns the master's pid
// and its workers.
func faultProxyMaster(parent int, comm string) (int, []int, error) {
	procs := testenv.Procs()
	for _, m := range procs {
		if m.PPID != parent || m.Comm != comm || m.State == 'Z' {
			continue
		}
		var workers []int
		for _, w := range procs {
			if w.PPID == m.PID && w.State != 'Z' {
				workers = append(workers, w.PID)
			}
		}
		if len(workers) > 0 {
			return m.PID, workers, nil
		}
	}
	return 0, nil, fmt.Errorf("no %s master with workers among the children of pid %d", comm, parent)
}

// faultLeftovers lists live processes that belong to a dead master's
// generation: its children, its process group, or one of its workers
// (same pid, same group: not a reused pid).
func faultLeftovers(master int, workers []int) []string {
	was := map[int]bool{}
	for _, w := range workers {
		was[w] = true
	}
	var out []string
	for _, p := range testenv.Procs() {
		if p.State == 'Z' {
			continue // holds no socket; PID 1 may never reap it
		}
		if p.PID == master || p.PPID == master || p.PGrp == master || (was[p.PID] && p.PGrp == master) {
			out = append(out, fmt.Sprintf("pid %d (%s, ppid %d, pgrp %d, state %c)", p.PID, p.Comm, p.PPID, p.PGrp, p.State))
		}
	}
	return out
}

// faultWaitNewMaster waits until the renderer runs a master other than
// old with workers, and returns it.
func faultWaitNewMaster(t *testing.T, h *faultHost, comm string, old int) (int, []int) {
	t.Helper()
	var master int
	var workers []int
	testenv.Eventually(t, 10*time.Second, func() error {
		m, w, err := faultProxyMaster(h.pid(), comm)
		if err != nil {
			return err
		}
		if m == old {
			return fmt.Errorf("%s master is still the old pid %d", comm, old)
		}
		master, workers = m, w
		return nil
	})
	return master, workers
}

// TestFaultProxyMasterKill9: the supervised proxy's master is killed with
// SIGKILL while a worker serves. Expected: within 1 s /status shows the
// death (up=false or deaths=1); the renderer kills what is left of the
// old generation (nginx workers outlive a SIGKILLed master and would keep
// the port) and restarts the proxy, which serves the backend's answer
// again within a few seconds; then deaths==1, restarts==1, up=true, the
// master is a new process, and no worker of the old master is alive.
// The same holds for HAProxy in master-worker mode (-W).
func TestFaultProxyMasterKill9(t *testing.T) {
	consul := testenv.StartConsul(t)
	for _, kind := range []string{"nginx", "haproxy"} {
		t.Run(kind, func(t *testing.T) {
			tmpl := faultNginxTemplate("")
			if kind == "haproxy" {
				tmpl = faultHAProxyTemplate
			}
			svc := testenv.RandomName("kill9-" + kind)
			b := startBackend(t, svc+"-1")
			faultRegister(t, consul, svc, b)
			h := faultStart(t, consul, faultOpts{proxy: kind, tmpl: tmpl, service: svc})
			testenv.Eventually(t, 30*time.Second, func() error { return h.serves(b.name, "") })
			// The worker may serve before the renderer's start check
			// (workers listed by /proc or "show proc") has seen it.
			h.waitStatus(t, 10*time.Second, func(s *faultStatus) error {
				if p := s.Proxies[0]; !p.Supervised || !p.Up || p.Deaths != 0 || p.Restarts != 0 {
					return fmt.Errorf("before the kill: want supervised, up, no deaths: %+v", p)
				}
				return nil
			})
			master, workers := faultWaitNewMaster(t, h, kind, 0)

			killed := time.Now()
			if err := syscall.Kill(master, syscall.SIGKILL); err != nil {
				t.Fatalf("kill -9 %s master %d: %v", kind, master, err)
			}
			// Seen within 1 s: down, or already counted as a death (the
			// restart backoff starts at 100 ms, so it may be up again).
			var seen time.Duration
			var seenStatus string
			_ = testenv.WaitFor(3*time.Second, func() error {
				s, err := h.status()
				if err != nil {
					return err
				}
				if p := s.Proxies[0]; !p.Up || p.Deaths >= 1 {
					seen, seenStatus = time.Since(killed), fmt.Sprintf("up=%v deaths=%d", p.Up, p.Deaths)
					return nil
				}
				return errors.New("death not seen yet")
			})
			if seen == 0 || seen > time.Second {
				t.Errorf("/status did not show the master's death within 1 s (seen after %s; 0 = not within 3 s)", seen)
			}

			var servedAfter time.Duration
			testenv.Eventually(t, 15*time.Second, func() error {
				if h.proc.Exited() {
					return errors.New("renderer exited")
				}
				if err := h.serves(b.name, ""); err != nil {
					return err
				}
				servedAfter = time.Since(killed)
				return nil
			})
			if servedAfter > 5*time.Second {
				t.Errorf("%s served again only %s after the kill, want within 5 s", kind, servedAfter)
			}
			after := h.waitStatus(t, 5*time.Second, func(s *faultStatus) error {
				if p := s.Proxies[0]; !p.Up || p.Restarts < 1 {
					return fmt.Errorf("up=%v restarts=%d", p.Up, p.Restarts)
				}
				return nil
			})
			if p := after.Proxies[0]; p.Deaths != 1 || p.Restarts != 1 || !p.Up {
				t.Errorf("after one kill -9: want deaths=1 restarts=1 up=true; got deaths=%d restarts=%d up=%v\n%s",
					p.Deaths, p.Restarts, p.Up, after.raw)
			}
			newMaster, _ := faultWaitNewMaster(t, h, kind, master)
			left := faultLeftovers(master, workers)
			if len(left) > 0 {
				t.Errorf("processes of the killed %s master %d (workers %v) still alive: %v", kind, master, workers, left)
			}
			t.Logf("SUMMARY %s: master %d (workers %v) killed; death in /status after %s (%s); served again after %s; new master %d; deaths=%d restarts=%d up=%v; old-generation leftovers %d",
				t.Name(), master, workers, seen.Round(time.Millisecond), seenStatus, servedAfter.Round(time.Millisecond),
				newMaster, after.Proxies[0].Deaths, after.Proxies[0].Restarts, after.Proxies[0].Up, len(left))
		})
	}
}

// TestFaultProxyDies5TimesInAMinute: the supervised nginx master is
// killed with SIGKILL five times, each time after its restart. Expected
// (default --max-proxy-deaths 5 within a minute): deaths 1 to 4 are each
// followed by a restart (up=true, restarts=n, a new master with workers)
// and the renderer keeps running; the 5th death makes the renderer give
// up and exit with code 4, promptly.
func TestFaultProxyDies5TimesInAMinute(t *testing.T) {
	consul := testenv.StartConsul(t)
	svc := testenv.RandomName("die5")
	b := startBackend(t, svc+"-1")
	faultRegister(t, consul, svc, b)
	h := faultStart(t, consul, faultOpts{proxy: "nginx", tmpl: faultNginxTemplate(""), service: svc})
	testenv.Eventually(t, 30*time.Second, func() error { return h.serves(b.name, "") })
	h.waitStatus(t, 10*time.Second, func(s *faultStatus) error {
		if p := s.Proxies[0]; !p.Up || p.Deaths != 0 {
			return fmt.Errorf("before the kills: up=%v deaths=%d", p.Up, p.Deaths)
		}
		return nil
	})
	master, _ := faultWaitNewMaster(t, h, "nginx", 0)
	start := time.Now()
	var restarts []string
	for n := 1; n <= 5; n++ {
		if err := syscall.Kill(master, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: kill -9 %d: %v", n, master, err)
		}
		killed := time.Now()
		if n == 5 {
			code, err := h.proc.Wait(10 * time.Second)
			if err != nil {
				s, _ := h.status()
				raw := ""
				if s != nil {
					raw = s.raw
				}
				t.Fatalf("after the 5th death within a minute the renderer still runs (%v)\n/status:\n%s", err, raw)
			}
			exitAfter := time.Since(killed)
			if code != 4 {
				t.Errorf("renderer exit code %d after the 5th death, want 4", code)
			}
			t.Logf("SUMMARY %s: deaths 1-4 restarted after %v; 5th death -> exit code %d after %s; 5 deaths in %s",
				t.Name(), restarts, code, exitAfter.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			return
		}
		s := h.waitStatus(t, 15*time.Second, func(s *faultStatus) error {
			if p := s.Proxies[0]; !p.Up || p.Restarts != int64(n) {
				return fmt.Errorf("death %d: up=%v deaths=%d restarts=%d", n, p.Up, p.Deaths, p.Restarts)
			}
			return nil
		})
		if p := s.Proxies[0]; p.Deaths != int64(n) {
			t.Errorf("death %d: /status says deaths=%d", n, p.Deaths)
		}
		if h.proc.Exited() {
			code, _ := h.proc.Wait(0)
			t.Fatalf("the renderer exited (code %d) after only %d deaths", code, n)
		}
		master, _ = faultWaitNewMaster(t, h, "nginx", master)
		testenv.Eventually(t, 10*time.Second, func() error { return h.serves(b.name, "") })
		restarts = append(restarts, time.Since(killed).Round(time.Millisecond).String())
	}
}

// faultMountTmpfs mounts a tmpfs of size on a new dir and unmounts it at
// cleanup (registered now, so it runs after everything started later has
// stopped). Under CI=true a mount that is not permitted fails the test.
func faultMountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0755"); err != nil {
		testenv.Need(t, false, fmt.Sprintf("mount -t tmpfs -o size=%s tmpfs %s: %v (needs root / CAP_SYS_ADMIN)", size, dir, err))
	}
	t.Cleanup(func() {
		for range 20 {
			if err := syscall.Unmount(dir, 0); err == nil || errors.Is(err, syscall.EINVAL) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func faultRemount(t *testing.T, dir, size string, ro bool) {
	t.Helper()
	flags := uintptr(syscall.MS_REMOUNT)
	if ro {
		flags |= syscall.MS_RDONLY
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", flags, "size="+size+",mode=0755"); err != nil {
		t.Fatalf("remount %s (ro=%v): %v", dir, ro, err)
	}
}

// faultFill writes path until the filesystem is full and returns the
// bytes written and the error that stopped it.
func faultFill(t *testing.T, path string) (int64, error) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte("x"), 16<<10)
	var n int64
	for range 4096 { // bounded: 64 MiB, far more than the tmpfs holds
		w, err := f.Write(chunk)
		n += int64(w)
		if err != nil {
			return n, err
		}
	}
	return n, errors.New("the filesystem never filled up")
}

// TestFaultDestinationFullAndReadOnly: the destination dir (nginx's prefix)
// is a 256 KiB tmpfs. After a good first render, the tmpfs is filled to
// ENOSPC and Consul changes. Expected: the render cannot be staged;
// /status shows write_errors>0 and last_error_kind "write", /ready answers
// 503, template_write_errors_total>0, the live file is unchanged and nginx
// keeps serving the old config. Once the filler is removed, the next
// change goes live (served through nginx) and /ready is 200 again. The
// same with the tmpfs remounted read-only (EROFS), and back read-write.
// nginx logs to stderr here: with its error.log open for writing in the
// prefix, the kernel refuses `mount -o remount,ro` with EBUSY.
func TestFaultDestinationFullAndReadOnly(t *testing.T) {
	const size = "256k"
	consul := testenv.StartConsul(t)
	dir := faultMountTmpfs(t, size)
	svc := testenv.RandomName("full")
	b := startBackend(t, svc+"-1")
	faultRegister(t, consul, svc, b)
	faultPut(t, consul, faultKeyGen, "1")
	// nginx logs to its stderr (the renderer's log), not into the prefix:
	// a file open for writing makes the kernel refuse the read-only
	// remount with EBUSY.
	tmpl := strings.Replace(faultNginxTemplate(""), "error_log error.log warn;", "error_log stderr warn;", 1)
	h := faultStart(t, consul, faultOpts{proxy: "nginx", tmpl: tmpl, prefix: dir, service: svc})
	testenv.Eventually(t, 30*time.Second, func() error { return h.serves(b.name, "1") })
	h.waitStatus(t, 10*time.Second, func(s *faultStatus) error {
		if !s.Ready {
			return fmt.Errorf("not ready: %s", s.Reason)
		}
		return nil
	})

	type phase struct {
		name    string
		breakFS func() string // returns what it did
		heal    func()
	}
	filler := filepath.Join(dir, "filler")
	phases := []phase{
		{"ENOSPC", func() string {
			n, err := faultFill(t, filler)
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the tmpfs: %d bytes, then %v (want ENOSPC)", n, err)
			}
			return fmt.Sprintf("filled with %d bytes", n)
		}, func() {
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
		}},
		{"EROFS", func() string {
			faultRemount(t, dir, size, true)
			return "remounted read-only"
		}, func() { faultRemount(t, dir, size, false) }},
	}
	gen := 1
	var summary []string
	for _, ph := range phases {
		beforeLive := h.live(t)
		s0 := h.mustStatus(t)
		did := ph.breakFS()
		gen++
		changed := time.Now()
		faultPut(t, consul, faultKeyGen, strconv.Itoa(gen))
		s := h.waitStatus(t, 15*time.Second, func(s *faultStatus) error {
			if tp := s.Templates[0]; tp.WriteErrors <= s0.Templates[0].WriteErrors || tp.LastErrorKind != "write" {
				return fmt.Errorf("%s: write_errors=%d kind=%q", ph.name, tp.WriteErrors, tp.LastErrorKind)
			}
			return nil
		})
		seen := time.Since(changed)
		tp := s.Templates[0]
		if s.Ready {
			t.Errorf("%s: /status says ready after a write failure", ph.name)
		}
		code, body := h.ready()
		if code != http.StatusServiceUnavailable {
			t.Errorf("%s: /ready = %d %q, want 503", ph.name, code, body)
		}
		m, err := h.metrics()
		if err != nil {
			t.Fatal(err)
		}
		if m["template_write_errors_total"] <= 0 || m["ready"] != 0 {
			t.Errorf("%s: metrics template_write_errors_total=%v ready=%v, want >0 and 0",
				ph.name, m["template_write_errors_total"], m["ready"])
		}
		if live := h.live(t); !bytes.Equal(live, beforeLive) {
			t.Errorf("%s: the live file changed although the write failed:\n%s", ph.name, firstDiff(beforeLive, live))
		}
		// The last good config serves. Right after its reload an old
		// worker may still take a connection for ~100 ms (nginx stops
		// old workers after the new ones are up): ask until it settles.
		testenv.Eventually(t, 3*time.Second, func() error {
			if err := h.serves(b.name, strconv.Itoa(gen-1)); err != nil {
				return fmt.Errorf("%s: nginx does not serve the old config: %w", ph.name, err)
			}
			return nil
		})
		wantErr := map[string]string{"ENOSPC": "no space left", "EROFS": "read-only file system"}[ph.name]
		if !strings.Contains(strings.ToLower(tp.LastError), wantErr) {
			t.Errorf("%s: last_error %q does not say %q", ph.name, tp.LastError, wantErr)
		}

		ph.heal()
		gen++
		healed := time.Now()
		faultPut(t, consul, faultKeyGen, strconv.Itoa(gen))
		var liveAfter time.Duration
		testenv.Eventually(t, 15*time.Second, func() error {
			if err := h.serves(b.name, strconv.Itoa(gen)); err != nil {
				return err
			}
			liveAfter = time.Since(healed)
			return nil
		})
		after := h.waitStatus(t, 10*time.Second, func(s *faultStatus) error {
			if !s.Ready {
				return fmt.Errorf("not ready: %s", s.Reason)
			}
			return nil
		})
		if code, body := h.ready(); code != http.StatusOK {
			t.Errorf("%s healed: /ready = %d %q, want 200", ph.name, code, body)
		}
		if !bytes.Contains(h.live(t), []byte(`X-Fault-Gen "`+strconv.Itoa(gen)+`"`)) {
			t.Errorf("%s healed: the live file does not carry gen %d", ph.name, gen)
		}
		summary = append(summary, fmt.Sprintf("%s (%s): write error seen after %s, write_errors=%d, /ready %d, metric %v; healed: live and served after %s, ready=%v",
			ph.name, did, seen.Round(time.Millisecond), tp.WriteErrors, code, m["template_write_errors_total"],
			liveAfter.Round(time.Millisecond), after.Ready))
	}
	if h.proc.Exited() {
		t.Fatal("renderer exited")
	}
	t.Logf("SUMMARY %s: %s", t.Name(), strings.Join(summary, "; "))
}

// TestFaultValidatorHangs: the operator's --validate-cmd hangs (a shell
// that runs `sleep 37` once a marker file exists) and --command-timeout is
// 1s, proxy none. Expected: the render is rejected about 1 s after the
// change (asserted: under 2 s): at the timeout the validator's whole
// process group is killed, the shell and its sleep, so nothing holds the
// output pipe and no hung validator outlives its render (asserted: no
// `sleep 37` left). The rejection has last_error_kind "validation" and an
// error that says it timed out; the daemon stays alive (/healthz 200), the
// live file is unchanged, and a later render with a validator that answers
// goes live.
func TestFaultValidatorHangs(t *testing.T) {
	consul := testenv.StartConsul(t)
	marker := filepath.Join(t.TempDir(), "hang")
	h := faultStart(t, consul, faultOpts{proxy: "none", tmpl: faultNginxTemplate(""), service: testenv.RandomName("hang"),
		args: []string{"--validate-cmd", "if [ -e '" + marker + "' ]; then sleep 37; fi; exit 0", "--command-timeout", "1s"}})
	s0 := h.waitStatus(t, 30*time.Second, func(s *faultStatus) error {
		if !s.Templates[0].Accepted || !s.Ready {
			return fmt.Errorf("first render not accepted yet (ready=%v %s)", s.Ready, s.Reason)
		}
		return nil
	})
	good := h.live(t)

	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	faultPut(t, consul, faultKeyGen, "1")
	s := h.waitStatus(t, 35*time.Second, func(s *faultStatus) error {
		if tp := s.Templates[0]; tp.Rejected <= s0.Templates[0].Rejected {
			return fmt.Errorf("not rejected yet (rejected=%d kind=%q)", tp.Rejected, tp.LastErrorKind)
		}
		return nil
	})
	took := time.Since(changed)
	tp := s.Templates[0]
	if tp.LastErrorKind != "validation" {
		t.Errorf("last_error_kind %q, want validation\n%s", tp.LastErrorKind, s.raw)
	}
	if !strings.Contains(tp.LastError, "timed out") {
		t.Errorf("last_error does not mention the timeout: %q", tp.LastError)
	}
	if took > 2*time.Second {
		t.Errorf("the hung validation was rejected only %s after the change (timeout 1s)", took)
	}
	if code, _, err := h.httpGet("/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("/healthz after the hung validation: %d %v", code, err)
	}
	if h.proc.Exited() {
		t.Fatal("renderer exited")
	}
	if live := h.live(t); !bytes.Equal(live, good) {
		t.Errorf("the live file changed although the validation timed out:\n%s", firstDiff(good, live))
	}
	var sleeps int
	testenv.Eventually(t, 2*time.Second, func() error {
		sleeps = faultCountCmdline("sleep\x0037\x00")
		if sleeps > 0 {
			return fmt.Errorf("%d hung validator children (sleep 37) outlived the timeout", sleeps)
		}
		return nil
	})

	// Still rendering: a validator that answers lets the next render in.
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	faultPut(t, consul, faultKeyGen, "2")
	h.waitStatus(t, 15*time.Second, func(s *faultStatus) error {
		if tp := s.Templates[0]; tp.LastErrorKind != "" || !bytes.Contains(h.live(t), []byte(`X-Fault-Gen "2"`)) {
			return fmt.Errorf("gen 2 not live yet (kind=%q)", tp.LastErrorKind)
		}
		return nil
	})
	t.Logf("SUMMARY %s: hung validation rejected %s after the change (timeout 1s), kind=%s, error %q; daemon alive, live file unchanged; validator children left running after the timeout: %d; next render accepted",
		t.Name(), took.Round(time.Millisecond), tp.LastErrorKind, tp.LastError, sleeps)
}

// TestFaultHeldRenderFailsValidationOnApply: --hold-down 3s, nginx
// external (no nginx runs: only the stale guard's upstream count and the
// validator matter), --validate-cmd that fails once a marker exists. Two
// instances are registered and then both deregistered: the render that
// empties the upstream is held (held=true, holds=1). With --max-removal
// 0.4 the render that removes only the first instance is held as well, so
// the hold is the same however Consul's answers are split. The marker is
// created and the hold-down passes. Expected: the held render is
// validated again when applied, fails, and the hold is over: held=false,
// rejected grows by exactly 1 and stays there for 5 more seconds (no
// retry loop), and the live file is unchanged.
func TestFaultHeldRenderFailsValidationOnApply(t *testing.T) {
	consul := testenv.StartConsul(t)
	marker := filepath.Join(t.TempDir(), "reject")
	svc := testenv.RandomName("held")
	b1, b2 := startBackend(t, svc+"-1"), startBackend(t, svc+"-2")
	faultRegister(t, consul, svc, b1)
	faultRegister(t, consul, svc, b2)
	h := faultStart(t, consul, faultOpts{proxy: "nginx", mode: "external", tmpl: faultNginxTemplate(""), service: svc,
		args: []string{"--validate-cmd", "test ! -e '" + marker + "'", "--hold-down", "3s", "--max-removal", "0.4"}})
	h.waitStatus(t, 30*time.Second, func(s *faultStatus) error {
		if !s.Templates[0].Accepted {
			return errors.New("first render not accepted yet")
		}
		if live, err := os.ReadFile(h.conf); err != nil || bytes.Count(live, []byte("server 127.0.0.1:")) != 2 {
			return fmt.Errorf("live file without both instances yet (%v)", err)
		}
		return nil
	})
	good := h.live(t)
	s0 := h.mustStatus(t)

	faultDeregister(t, consul, svc, b1)
	faultDeregister(t, consul, svc, b2)
	deregistered := time.Now()
	// Consul may answer the two deregistrations in two renders: the
	// marker comes only once the hold holds the render without either
	// instance, or the second render would be the one rejected.
	h.waitStatus(t, 10*time.Second, func(s *faultStatus) error {
		if tp := s.Templates[0]; !tp.Held || tp.Holds != 1 || tp.HeldBackendsAfter != 0 {
			return fmt.Errorf("held=%v holds=%d held_backends_after=%d", tp.Held, tp.Holds, tp.HeldBackendsAfter)
		}
		return nil
	})
	heldAfter := time.Since(deregistered)
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s := h.waitStatus(t, 15*time.Second, func(s *faultStatus) error {
		if tp := s.Templates[0]; tp.Held || tp.Rejected == s0.Templates[0].Rejected {
			return fmt.Errorf("held=%v rejected=%d", tp.Held, tp.Rejected)
		}
		return nil
	})
	appliedAfter := time.Since(deregistered)
	if appliedAfter < 2900*time.Millisecond {
		t.Errorf("the held render was refused %s after the deregistrations, before the 3s hold-down passed", appliedAfter)
	}
	rejected := s.Templates[0].Rejected
	if d := rejected - s0.Templates[0].Rejected; d != 1 {
		t.Errorf("rejected grew by %d when the held render was applied, want 1\n%s", d, s.raw)
	}
	if s.Templates[0].LastErrorKind != "validation" {
		t.Errorf("last_error_kind %q, want validation", s.Templates[0].LastErrorKind)
	}
	if s.Templates[0].Holds != 1 {
		t.Errorf("holds=%d, want 1", s.Templates[0].Holds)
	}
	// No spin: the refused render is not validated again and again.
	deadline := time.Now().Add(5 * time.Second)
	var last *faultStatus
	for time.Now().Before(deadline) {
		last = h.mustStatus(t)
		if tp := last.Templates[0]; tp.Rejected != rejected || tp.Held || tp.Holds != 1 {
			t.Fatalf("after the failed apply, /status moves: rejected %d -> %d, held=%v, holds=%d\n%s",
				rejected, tp.Rejected, tp.Held, tp.Holds, last.raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if live := h.live(t); !bytes.Equal(live, good) {
		t.Errorf("the live file changed:\n%s", firstDiff(good, live))
	}
	if h.proc.Exited() {
		t.Fatal("renderer exited")
	}
	t.Logf("SUMMARY %s: held %s after the deregistrations (holds=1); applied and rejected %s after them (hold-down 3s); rejected %d -> %d and unchanged for 5 s; live file unchanged",
		t.Name(), heldAfter.Round(time.Millisecond), appliedAfter.Round(time.Millisecond), s0.Templates[0].Rejected, last.Templates[0].Rejected)
}

// TestFaultTwoSwapsThenFailedReload: nginx supervised, --wait 2s:4s. A
// first change (gen 1) is reloaded: that config, C1, is proved. Then, in
// one batch, a new service is registered (swap 1, valid) and the KV listen
// address is set to a port the test holds open on 127.0.0.1 (swap 2).
// nginx -t does not bind, so swap 2 passes validation; the reload cannot
// bind and nginx keeps its old workers. Expected: reload_failures==1,
// rollbacks==1, the live file is C1 byte for byte (the last proved config,
// not swap 1, which no reload ever proved), and nginx still serves C1 on
// the old port.
//
// Both swaps land in one batch because the batch begins less than MIN
// (2s) after the change that preceded it, so it is not a leading edge and
// fires MIN after its last change; --min-reload-gap 2s keeps any batch at
// least 2s after the gen-1 reload as well. --command-timeout 3s bounds the
// wait for a reload that never takes (nginx itself retries the bind for
// about 2.5 s).
func TestFaultTwoSwapsThenFailedReload(t *testing.T) {
	consul := testenv.StartConsul(t)
	svc, extra := testenv.RandomName("app"), testenv.RandomName("extra")
	b := startBackend(t, svc+"-1")
	faultRegister(t, consul, svc, b)
	h := faultStart(t, consul, faultOpts{proxy: "nginx", tmpl: faultNginxTemplate(""), service: svc, extra: extra,
		args: []string{"--wait", "2s:4s", "--min-reload-gap", "2s", "--command-timeout", "3s"}})
	testenv.Eventually(t, 30*time.Second, func() error { return h.serves(b.name, "0") })

	// C1, proved by a reload.
	faultPut(t, consul, faultKeyGen, "1")
	s1 := h.waitStatus(t, 15*time.Second, func(s *faultStatus) error {
		if p := s.Proxies[0]; p.Reloads < 1 || p.ReloadPending {
			return fmt.Errorf("gen 1 not reloaded yet: reloads=%d pending=%v", p.Reloads, p.ReloadPending)
		}
		return nil
	})
	c1 := h.live(t)
	// The old worker may accept a connection or two after the new one
	// started: "reloaded" is not "only the new config answers".
	testenv.Eventually(t, 5*time.Second, func() error { return h.serves(b.name, "1") })

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	// The batch: swap 1, then swap 2, each waited for in /status.
	batch := time.Now()
	eb := startBackend(t, extra+"-1")
	faultRegister(t, consul, extra, eb)
	sw1 := h.waitStatus(t, 10*time.Second, func(s *faultStatus) error {
		if s.Templates[0].Swaps <= s1.Templates[0].Swaps {
			return errors.New("swap 1 not yet")
		}
		return nil
	})
	swap1 := h.live(t)
	if !bytes.Contains(swap1, []byte("svc_extra")) {
		t.Fatalf("swap 1 is not the config with the new service:\n%s", swap1)
	}
	faultPut(t, consul, faultKeyListen, taken.Addr().String())
	h.waitStatus(t, 10*time.Second, func(s *faultStatus) error {
		if s.Templates[0].Swaps <= sw1.Templates[0].Swaps {
			return errors.New("swap 2 not yet")
		}
		return nil
	})
	bothSwapped := time.Since(batch)
	if p := h.mustStatus(t).Proxies[0]; p.Reloads != s1.Proxies[0].Reloads || p.ReloadFailures != 0 {
		t.Fatalf("a reload ran between swap 1 and swap 2 (reloads %d -> %d, failures %d): not one batch; swaps took %s",
			s1.Proxies[0].Reloads, p.Reloads, p.ReloadFailures, bothSwapped)
	}

	s := h.waitStatus(t, 20*time.Second, func(s *faultStatus) error {
		if p := s.Proxies[0]; p.ReloadFailures < 1 || p.Rollbacks < 1 || p.ReloadPending {
			return fmt.Errorf("reload_failures=%d rollbacks=%d pending=%v", p.ReloadFailures, p.Rollbacks, p.ReloadPending)
		}
		return nil
	})
	rolledBack := time.Since(batch)
	p := s.Proxies[0]
	if p.ReloadFailures != 1 || p.Rollbacks != 1 {
		t.Errorf("want reload_failures=1 rollbacks=1, got %d and %d\n%s", p.ReloadFailures, p.Rollbacks, s.raw)
	}
	live := h.live(t)
	switch {
	case bytes.Equal(live, swap1):
		t.Errorf("the rollback restored swap 1, a config no reload ever proved, instead of C1")
	case !bytes.Equal(live, c1):
		t.Errorf("after the rollback the live file is not C1 (the config before the batch):\n%s", firstDiff(c1, live))
	}
	if err := h.serves(b.name, "1"); err != nil {
		t.Errorf("nginx does not serve C1 on the old port %s after the rollback: %v", h.listen, err)
	}
	if h.proc.Exited() {
		t.Fatal("renderer exited")
	}
	tp := s.Templates[0]
	t.Logf("SUMMARY %s: both swaps within %s of the batch start, one batch; reload failed and rolled back %s after the batch start; reloads=%d reload_failures=%d rollbacks=%d, kind=%q; live == C1: %v; nginx serves gen 1 on %s",
		t.Name(), bothSwapped.Round(time.Millisecond), rolledBack.Round(time.Millisecond), p.Reloads, p.ReloadFailures, p.Rollbacks,
		tp.LastErrorKind, bytes.Equal(live, c1), h.listen)
}

// faultBrokenTemplate does not parse: the action on line 3 is never closed.
const faultBrokenTemplate = "events { worker_connections 16; }\n" +
	"http {\n" +
	"{{ range services }\n" +
	"  # {{ .Name }}\n" +
	"{{ end }}\n" +
	"}\n"

// TestFaultTemplateSyntaxError: (a) a template with an unclosed action
// (`{{ range services }` on line 3) fails the start: the daemon, `renderer
// once` and `renderer plan` each exit with code 1 and name the file and
// line 3 on stderr. (b) A running daemon whose template is overwritten with
// that broken one and sent SIGHUP keeps its running templates: /status
// shows last_error_kind "execute" and exec_errors>0, nginx keeps serving
// the last config; the template fixed (a new header) and SIGHUP again
// goes live.
func TestFaultTemplateSyntaxError(t *testing.T) {
	consul := testenv.StartConsul(t)
	bin := testenv.BuildBinary(t, "github.com/switchyard/switchyard/renderer")
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.tmpl")
	if err := os.WriteFile(broken, []byte(faultBrokenTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	wantLine := regexp.MustCompile(regexp.QuoteMeta("template "+broken+": line 3:") + `|` + regexp.QuoteMeta(broken) + `.*line 3\b`)
	var startSummary []string
	for _, sub := range []string{"", "once", "plan"} {
		var args []string
		if sub != "" {
			args = append(args, sub)
		}
		args = append(args, "--consul-addr", consul.Addr, "--proxy", "nginx", "--nginx-bin", testenv.NginxBinary(t),
			"--template", broken+":"+filepath.Join(dir, "out-"+sub+".conf"), "--status-addr", "127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)))
		if sub != "" {
			args = args[:len(args)-2] // --status-addr is the daemon's
			args = append(args, "--timeout", "10s")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, bin, args...)
		var stderr bytes.Buffer
		cmd.Stderr, cmd.Stdout = &stderr, io.Discard
		start := time.Now()
		err := cmd.Run()
		took := time.Since(start)
		cancel()
		name := "daemon"
		if sub != "" {
			name = "renderer " + sub
		}
		var ee *exec.ExitError
		code := -1
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err == nil {
			code = 0
		}
		if code != 1 {
			t.Errorf("%s with a broken template: exit code %d (%v), want 1; stderr:\n%s", name, code, err, stderr.String())
		}
		if !wantLine.MatchString(stderr.String()) {
			t.Errorf("%s: stderr does not name %s and line 3:\n%s", name, broken, stderr.String())
		}
		startSummary = append(startSummary, fmt.Sprintf("%s exit %d in %s", name, code, took.Round(time.Millisecond)))
	}
	if t.Failed() {
		return
	}

	// (b) The live edit.
	svc := testenv.RandomName("edit")
	b := startBackend(t, svc+"-1")
	faultRegister(t, consul, svc, b)
	tmpl := filepath.Join(dir, "live.tmpl")
	if err := os.WriteFile(tmpl, []byte(faultNginxTemplate("v1")), 0o644); err != nil {
		t.Fatal(err)
	}
	h := faultStart(t, consul, faultOpts{proxy: "nginx", tmplPath: tmpl, service: svc})
	testenv.Eventually(t, 30*time.Second, func() error {
		if err := h.serves(b.name, ""); err != nil {
			return err
		}
		if a, _ := h.get("", "/"); a.template != "v1" {
			return fmt.Errorf("X-Fault-Template %q, want v1", a.template)
		}
		return nil
	})
	good := h.live(t)
	s0 := h.mustStatus(t)

	if err := os.WriteFile(tmpl, []byte(faultBrokenTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	s := h.waitStatus(t, 10*time.Second, func(s *faultStatus) error {
		if tp := s.Templates[0]; tp.ExecErrors <= s0.Templates[0].ExecErrors || tp.LastErrorKind != "execute" {
			return fmt.Errorf("exec_errors=%d kind=%q", tp.ExecErrors, tp.LastErrorKind)
		}
		return nil
	})
	brokenErr := s.Templates[0].LastError
	if !strings.Contains(brokenErr, "line 3") {
		t.Errorf("last_error after the broken edit does not name line 3: %q", brokenErr)
	}
	brokenReady, _ := h.ready()
	if a, err := h.get("", "/"); err != nil || a.template != "v1" || a.from != b.name {
		t.Errorf("after the broken edit nginx does not serve the last config: %+v %v", a, err)
	}
	// The running templates keep rendering: a Consul change still goes live.
	faultPut(t, consul, faultKeyGen, "7")
	testenv.Eventually(t, 15*time.Second, func() error { return h.serves(b.name, "7") })
	if a, err := h.get("", "/"); err != nil || a.template != "v1" {
		t.Errorf("after the broken edit a Consul change is rendered with the old template: %+v %v", a, err)
	}
	if h.proc.Exited() {
		t.Fatal("renderer exited after SIGHUP with a broken template")
	}

	if err := os.WriteFile(tmpl, []byte(faultNginxTemplate("v2")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	fixed := time.Now()
	var liveAfter time.Duration
	testenv.Eventually(t, 15*time.Second, func() error {
		a, err := h.get("", "/")
		if err != nil {
			return err
		}
		if a.template != "v2" || a.from != b.name {
			return fmt.Errorf("X-Fault-Template %q from %q, want v2 from %s", a.template, a.from, b.name)
		}
		liveAfter = time.Since(fixed)
		return nil
	})
	after := h.waitStatus(t, 10*time.Second, func(s *faultStatus) error {
		if tp := s.Templates[0]; tp.LastErrorKind != "" || !s.Ready {
			return fmt.Errorf("kind=%q ready=%v %s", tp.LastErrorKind, s.Ready, s.Reason)
		}
		return nil
	})
	if bytes.Equal(h.live(t), good) {
		t.Error("the fixed template's config is not live")
	}
	t.Logf("SUMMARY %s: start with a broken template: %s; live edit: broken SIGHUP -> exec_errors %d -> %d, kind=%q, /ready %d, last config kept serving (and following Consul with the old template); fixed SIGHUP -> new content served after %s, ready=%v",
		t.Name(), strings.Join(startSummary, ", "), s0.Templates[0].ExecErrors, s.Templates[0].ExecErrors,
		s.Templates[0].LastErrorKind, brokenReady, liveAfter.Round(time.Millisecond), after.Ready)
}

// faultCountCmdline counts live processes whose /proc cmdline is exactly
// cmdline (NUL-separated, as the kernel writes it).
func faultCountCmdline(cmdline string) int {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && string(b) == cmdline {
			n++
		}
	}
	return n
}
