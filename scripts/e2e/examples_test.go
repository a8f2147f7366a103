package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/flagsdoc/clidoc"
	"github.com/switchyard/switchyard/scripts/testenv"
)

// The recipes in examples/ that a test can exercise here: the systemd
// units and their environment files, and the renderer's ACL policy
// (examples/consul/registrar-policy.hcl has its own test in registrar/).

// exUnits are the unit files of examples/systemd with the binary it runs.
var exUnits = map[string]string{"registrar.service": "registrar", "renderer.service": "renderer"}

// exEnvFiles maps each environment file to the binary that reads it.
var exEnvFiles = map[string]string{"registrar.env": "registrar", "renderer.env": "renderer", "renderer-haproxy.env": "renderer"}

// exTemplateVars are read by the shipped templates, not by a binary.
var exTemplateVars = map[string]bool{"SWITCHYARD_LISTEN": true}

// TestSystemdUnits checks the units with systemd's own tools (there is no
// systemd to run them here): `systemd-analyze verify` finds no unknown or
// malformed setting, and `systemd-analyze security` rates each at most
// 2.0 ("OK"); every variable their environment files set, or show
// commented out, is one the binary reads; every flag on an ExecStart line
// is one it has; every file is documented in the walkthrough.
func TestSystemdUnits(t *testing.T) {
	root := pkgRoot(t)
	analyze, err := exec.LookPath("systemd-analyze")
	testenv.Need(t, err == nil, fmt.Sprintf("systemd-analyze: %v", err))
	dir := filepath.Join(root, "examples", "systemd")
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		name := filepath.Base(f)
		if exUnits[name] == "" && exEnvFiles[name] == "" {
			t.Errorf("examples/systemd/%s: unknown to this test; add it to exUnits or exEnvFiles", name)
		}
	}
	walkthrough, err := os.ReadFile(filepath.Join(root, "examples", "multi-host.md"))
	if err != nil {
		t.Fatal(err)
	}
	flags := exFlags(t, root)

	for unit, bin := range exUnits {
		t.Run(unit, func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join(dir, unit))
			if err != nil {
				t.Fatal(err)
			}
			exec := exExecStart(t, string(body))
			if exec[0] != "/usr/local/bin/"+bin {
				t.Errorf("ExecStart runs %s; want /usr/local/bin/%s", exec[0], bin)
			}
			for _, a := range exec[1:] {
				name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
				if strings.HasPrefix(a, "-") && !flags[bin].flags[name] {
					t.Errorf("ExecStart passes %s, which %s does not have", a, bin)
				}
			}
			// verify runs the unit's binary check too: point it at a real one.
			built := testenv.BuildBinary(t, "github.com/switchyard/switchyard/"+bin)
			copyPath := filepath.Join(t.TempDir(), unit)
			if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(body), exec[0], built)), 0o644); err != nil {
				t.Fatal(err)
			}
			out := exRun(t, analyze, "verify", copyPath)
			if strings.TrimSpace(out) != "" {
				t.Errorf("systemd-analyze verify %s:\n%s", unit, out)
			}
			out = exRun(t, analyze, "security", "--offline=true", copyPath)
			m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("systemd-analyze security %s: no overall level in:\n%s", unit, out)
			}
			if level, _ := strconv.ParseFloat(m[1], 64); level > 2.0 {
				t.Errorf("systemd-analyze security rates %s %.1f; want at most 2.0:\n%s", unit, level, out)
			}
			t.Logf("systemd-analyze security: %s exposure %s", unit, m[1])
			if !strings.Contains(string(walkthrough), "systemd/"+unit) {
				t.Errorf("examples/multi-host.md does not mention systemd/%s", unit)
			}
		})
	}
	for file, bin := range exEnvFiles {
		t.Run(file, func(t *testing.T) {
			env, commented := exReadEnv(t, filepath.Join(dir, file))
			for k := range env {
				commented[k] = env[k]
			}
			for k := range commented {
				if !flags[bin].env[k] && !exTemplateVars[k] {
					t.Errorf("%s sets %s, which %s does not read (nor the shipped templates)", file, k, bin)
				}
			}
			if !strings.Contains(string(walkthrough), "systemd/"+file) {
				t.Errorf("examples/multi-host.md does not mention systemd/%s", file)
			}
		})
	}
}

type exAppFlags struct{ flags, env map[string]bool }

// exFlags reads both cli apps' flag names and env vars (scripts/flagsdoc).
func exFlags(t *testing.T, root string) map[string]exAppFlags {
	t.Helper()
	out := map[string]exAppFlags{}
	for _, spec := range clidoc.Apps {
		app, err := clidoc.Load(context.Background(), root, spec)
		if err != nil {
			t.Fatal(err)
		}
		a := exAppFlags{flags: map[string]bool{}, env: map[string]bool{}}
		for _, f := range app.Flags {
			for _, n := range f.Names {
				a.flags[n] = true
			}
			for _, e := range f.Env {
				a.env[e] = true
			}
		}
		out[spec.Name] = a
	}
	return out
}

// exExecStart returns the ExecStart command line, continuations joined.
func exExecStart(t *testing.T, unit string) []string {
	t.Helper()
	joined := strings.ReplaceAll(unit, "\\\n", " ")
	for _, line := range strings.Split(joined, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "ExecStart="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatal("no ExecStart=")
	return nil
}

// exReadEnv reads KEY=VALUE lines, and the "#KEY=VALUE" lines that show a
// setting commented out (prose comments have a blank after the #).
func exReadEnv(t *testing.T, path string) (set, commented map[string]string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	set, commented = map[string]string{}, map[string]string{}
	re := regexp.MustCompile(`^(#?)([A-Z][A-Z0-9_]*)=(.*)$`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		m := re.FindStringSubmatch(line)
		switch {
		case m == nil && line != "" && !strings.HasPrefix(line, "# ") && line != "#":
			t.Errorf("%s: %q is neither KEY=VALUE nor a comment", path, line)
		case m == nil:
		case m[1] == "#":
			commented[m[2]] = m[3]
		default:
			set[m[2]] = m[3]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return set, commented
}

func exRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Errorf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return string(out)
}

// TestRendererEnvFilesUnprivileged runs the renderer the way
// renderer.service does, with each of its environment files, as an
// unprivileged user (nobody), not root: the unit's DynamicUser=yes. Only
// what is host-specific is changed: the paths (/etc/switchyard/templates
// -> the repository's templates, /var/lib/switchyard -> a directory made
// as the unit's StateDirectory= makes it), the Consul address, and the
// listen and status addresses. It proves the variables are complete and
// consistent, that the StateDirectory= list covers what the proxy writes,
// and that nginx and HAProxy run without root under the renderer.
func TestRendererEnvFilesUnprivileged(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the renderer and proxies")
	}
	root := pkgRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	testenv.Need(t, err == nil, fmt.Sprintf("setpriv (util-linux): %v", err))
	testenv.Need(t, os.Getuid() == 0, "root, to run the renderer as another user")
	unit, err := os.ReadFile(filepath.Join(root, "examples", "systemd", "renderer.service"))
	if err != nil {
		t.Fatal(err)
	}
	consul := testenv.StartConsul(t)
	bin := testenv.BuildBinary(t, "github.com/switchyard/switchyard/renderer")
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "envfile-backend")
	}))
	t.Cleanup(backend.Close)
	_, portStr, _ := net.SplitHostPort(backend.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)
	svc := testenv.RandomName("envfile")
	if err := consul.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: svc, Address: "127.0.0.1", Port: port}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ file, proxy, binVar string }{
		{"renderer.env", "nginx", "RENDERER_NGINX_BIN"},
		{"renderer-haproxy.env", "haproxy", "RENDERER_HAPROXY_BIN"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			proxyBin := testenv.NginxBinary(t)
			if tc.proxy == "haproxy" {
				proxyBin = testenv.HAProxyBinary(t)
			}
			state := exStateDirs(t, string(unit))
			env, _ := exReadEnv(t, filepath.Join(root, "examples", "systemd", tc.file))
			if env["RENDERER_PROXY"] != tc.proxy {
				t.Fatalf("%s: RENDERER_PROXY=%s; want %s", tc.file, env["RENDERER_PROXY"], tc.proxy)
			}
			ports, err := testenv.PickPorts(2)
			if err != nil {
				t.Fatal(err)
			}
			listen, status := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
			var vars []string
			for k, v := range env {
				v = strings.ReplaceAll(v, "/etc/switchyard/templates", filepath.Join(root, "templates"))
				v = strings.ReplaceAll(v, "/var/lib/switchyard", state)
				switch k {
				case "CONSUL_HTTP_ADDR":
					v = consul.Addr
				case "SWITCHYARD_LISTEN":
					v = listen
				case "RENDERER_STATUS_ADDR":
					v = status
				}
				vars = append(vars, k+"="+v)
			}
			vars = append(vars, tc.binVar+"="+proxyBin, "HOME=/nonexistent")
			p := testenv.StartProcess(t, "renderer", setpriv,
				[]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--", bin}, vars...)
			testenv.Eventually(t, 60*time.Second, func() error {
				body, err := pkgGet("http://"+listen+"/", svc+".localhost")
				if err != nil {
					return err
				}
				if body != "envfile-backend" {
					return fmt.Errorf("answer %q", body)
				}
				_, err = pkgGet("http://"+status+"/ready", "")
				return err
			})
			var proxies int
			for _, c := range testenv.Procs() {
				if c.PPID == p.Cmd.Process.Pid && c.Comm == tc.proxy {
					proxies++
					if uid := exUID(t, c.PID); uid != "65534" {
						t.Errorf("%s (pid %d) runs as uid %s; want 65534", tc.proxy, c.PID, uid)
					}
				}
			}
			if proxies != 1 {
				t.Errorf("the renderer has %d %s children; want 1", proxies, tc.proxy)
			}
		})
	}
}

// exStateDirs makes what the unit's StateDirectory= makes, under a new
// directory standing for /var/lib, owned by nobody, and returns the
// directory standing for /var/lib/switchyard.
func exStateDirs(t *testing.T, unit string) string {
	t.Helper()
	base, err := os.MkdirTemp("", "switchyard-state-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, line := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "StateDirectory="); ok {
			dirs = append(dirs, strings.Fields(v)...)
		}
	}
	for _, d := range dirs {
		path := filepath.Join(base, d)
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
		for p := path; p != base; p = filepath.Dir(p) {
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}
	}
	return filepath.Join(base, "switchyard")
}

func exUID(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				return f[0]
			}
		}
	}
	return "?"
}

// TestRendererACLPolicy proves examples/consul/renderer-policy.hcl on a
// Consul agent with default_policy "deny": with a token of exactly that
// policy (passed as the docs say, in CONSUL_HTTP_TOKEN_FILE) the renderer
// renders both instances of a service with the shipped HAProxy template;
// with either of its two rules removed it renders none, so neither is
// more than the renderer needs.
func TestRendererACLPolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	root := pkgRoot(t)
	policy, err := os.ReadFile(filepath.Join(root, "examples", "consul", "renderer-policy.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	const management = "5e1ec7ed-0000-4000-8000-00000000aa01"
	sc := testenv.StartSecureConsul(t, testenv.SecureOptions{ACLToken: management})
	bin := testenv.BuildBinary(t, "github.com/switchyard/switchyard/renderer")
	svc := testenv.RandomName("acl")
	for i, port := range []int{18081, 18082} {
		reg := &api.AgentServiceRegistration{ID: fmt.Sprintf("%s-%d", svc, i), Name: svc, Address: "127.0.0.1", Port: port}
		if err := sc.Client.Agent().ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
	}

	rule := func(kind string) *regexp.Regexp {
		return regexp.MustCompile(`(?ms)^` + kind + ` "" \{.*?^\}\n`)
	}
	for _, tc := range []struct {
		name, rules string
		servers     int
	}{
		{"policy", string(policy), 2},
		{"without node_prefix", rule("node_prefix").ReplaceAllString(string(policy), ""), 0},
		{"without service_prefix", rule("service_prefix").ReplaceAllString(string(policy), ""), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.rules == string(policy) && tc.servers == 0 {
				t.Fatalf("removing the rule changed nothing: the policy's layout is not what this test expects")
			}
			secret, _ := sc.CreateACLToken(t, strings.ReplaceAll(tc.name, " ", "-"), tc.rules)
			dir := t.TempDir()
			tokenFile := filepath.Join(dir, "token")
			if err := os.WriteFile(tokenFile, []byte(secret+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			dest := filepath.Join(dir, "haproxy.cfg")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "once", "--timeout", "30s", "--proxy", "none",
				"--template", filepath.Join(root, "templates", "haproxy.cfg.tmpl")+":"+dest)
			cmd.Env = append(os.Environ(), "CONSUL_HTTP_ADDR="+sc.Addr, "CONSUL_HTTP_TOKEN_FILE="+tokenFile, "CONSUL_HTTP_TOKEN=")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("renderer once: %v\n%s", err, out)
			}
			cfg, err := os.ReadFile(dest)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(cfg), "\n    server "); n != tc.servers {
				t.Errorf("rendered %d server lines; want %d:\n%s", n, tc.servers, cfg)
			}
		})
	}
}
