package templates_test

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	dep "github.com/hashicorp/consul-template/dependency"

	"github.com/switchyard/switchyard/scripts/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var streamModuleRe = regexp.MustCompile(`(?m)^load_module (\S+/ngx_stream_module\.so);$`)

// instance is one passing instance of a service in a scenario.
type instance struct {
	id, addr string
	port     int
}

// scenario is a catalog: service name -> passing instances.
type scenario struct {
	name     string
	services map[string][]instance
	order    []string // catalog order (Consul sorts by name)
}

var scenarios = []scenario{
	{name: "empty"},
	{
		name:  "two-services",
		order: []string{"api", "consul", "web"},
		services: map[string][]instance{
			"api":    {{"api-1", "10.0.0.5", 9000}},
			"consul": {{"consul", "127.0.0.1", 8300}},
			"web": {
				{"h1:web-1:80", "10.0.0.1", 32768},
				{"h2:web-2:80", "10.0.0.2", 32769},
			},
		},
	},
	{
		// A service that has no passing instance gets no upstream: an empty
		// upstream block fails nginx -t.
		name:     "no-passing-instance",
		order:    []string{"down", "web"},
		services: map[string][]instance{"down": nil, "web": {{"w1", "10.0.0.1", 80}}},
	},
	{
		name:  "ipv6",
		order: []string{"web"},
		services: map[string][]instance{
			"web": {{"w6", "fd00::1", 8080}, {"w4", "10.0.0.1", 8080}},
		},
	},
	{
		// Names and addresses come from container labels: none of them may
		// inject a directive, and the config must still pass nginx -t.
		name: "hostile",
		order: []string{
			"a b", "evil;include /etc/passwd", "evil}\nserver {", "tag.name", "web", "x$host", "{{inject}}",
		},
		services: map[string][]instance{
			"a b":                      {{"i1", "10.0.0.9", 80}},
			"evil;include /etc/passwd": {{"i2", "10.0.0.9", 80}},
			"evil}\nserver {":          {{"i3", "10.0.0.9", 80}},
			"tag.name":                 {{"i4", "10.0.0.9", 80}},
			"x$host":                   {{"i5", "10.0.0.9", 80}},
			"{{inject}}":               {{"i6", "10.0.0.9", 80}},
			"web": {
				{"ok", "10.0.0.1", 80},
				{"inject-addr", "10.0.0.2;\n    include /etc/passwd;#", 80},
				{"space-addr", "10.0.0.3 backup", 80},
			},
		},
	},
	{
		name:     "only-unsafe-instances",
		order:    []string{"web"},
		services: map[string][]instance{"web": {{"bad", "1.2.3.4; return 200", 80}}},
	},
}

// defectScenarios are the two catalogs of issue 10 that froze the proxy:
// a service registered without a port made the nginx template render
// `server ...:0`, and services WEB and web two upstreams that nginx, which
// compares upstream names without case, called duplicates. nginx -t
// rejected that render and every later one, so no change of any service
// reached the proxy any more.
var defectScenarios = []scenario{
	{
		name:  "port-zero",
		order: []string{"api", "web"},
		services: map[string][]instance{
			"api": {{"api-1", "10.0.0.5", 9000}},
			"web": {{"web-0", "10.0.0.9", 0}, {"web-1", "10.0.0.1", 80}},
		},
	},
	{
		// Consul sorts by bytes: WEB comes first and keeps the route.
		name:  "case-duplicates",
		order: []string{"WEB", "api", "web"},
		services: map[string][]instance{
			"WEB": {{"WEB-1", "10.0.0.7", 80}},
			"api": {{"api-1", "10.0.0.5", 9000}},
			"web": {{"web-1", "10.0.0.1", 80}},
		},
	},
}

// catalogOf turns a scenario into the catalog the Brain is seeded with.
func catalogOf(s scenario) catalog {
	var c catalog
	for _, name := range s.order {
		cs := catService{name: name, instances: []*dep.HealthService{}}
		for _, in := range s.services[name] {
			cs.instances = append(cs.instances, &dep.HealthService{
				Node: "node1", ID: in.id, Name: name, Address: in.addr, Port: in.port, Status: "passing",
			})
		}
		c = append(c, cs)
	}
	return c
}

func render(t testing.TB, src string, s scenario, env []string) []byte {
	t.Helper()
	return renderCatalog(t, src, catalogOf(s), env)
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./templates -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden file; got:\n%s", path, got)
	}
}

func TestNginxTemplate(t *testing.T) {
	nginx := testenv.NginxBinary(t)
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) {
			out := render(t, "nginx.conf.tmpl", s, []string{"SWITCHYARD_LISTEN=127.0.0.1:18080"})
			golden(t, "nginx-"+s.name+".conf", out)

			// Whatever Consul says, every instance line is a literal
			// address:port and every server_name a plain token.
			noInjectedDirective(t, out, "include", "return 200")
			nginxAccepts(t, nginx, out)
		})
	}
}

// TestNginxTemplateDefaultListen checks the listen default when
// SWITCHYARD_LISTEN is unset.
func TestNginxTemplateDefaultListen(t *testing.T) {
	t.Setenv("SWITCHYARD_LISTEN", "")
	out := render(t, "nginx.conf.tmpl", scenario{name: "empty"}, nil)
	if !bytes.Contains(out, []byte("listen 127.0.0.1:8080 default_server;")) {
		t.Errorf("default listen missing:\n%s", out)
	}
}

// TestNginxTemplateSettings: issue 9's settings. Lua off renders the
// plain template an nginx without the Lua module accepts (no load_module,
// no balancer, no endpoint); the module dir and the endpoint port follow
// the environment, and the endpoint always listens on loopback.
func TestNginxTemplateSettings(t *testing.T) {
	nginx := testenv.NginxBinary(t)
	s := scenarios[1] // two-services
	off := render(t, "nginx.conf.tmpl", s, []string{"SWITCHYARD_LISTEN=127.0.0.1:18080", "SWITCHYARD_NGINX_LUA=off"})
	golden(t, "nginx-two-services-lua-off.conf", off)
	for _, w := range []string{"load_module", "lua", "switchyard/upstreams"} {
		if bytes.Contains(off, []byte(w)) {
			t.Errorf("Lua off still has %q", w)
		}
	}
	nginxAccepts(t, nginx, off)

	on := render(t, "nginx.conf.tmpl", s, []string{"SWITCHYARD_NGINX_API_PORT=19999", "SWITCHYARD_NGINX_MODULES=/opt/mods"})
	for _, w := range []string{"listen 127.0.0.1:19999;", "load_module /opt/mods/ndk_http_module.so;", "load_module /opt/mods/ngx_http_lua_module.so;"} {
		if !bytes.Contains(on, []byte(w)) {
			t.Errorf("%q missing", w)
		}
	}
	// Without a port, the endpoint takes the listen port on 127.0.0.2: an
	// endpoint of its own for every nginx of a host.
	for listen, want := range map[string]string{"": "127.0.0.2:8080", "0.0.0.0:80": "127.0.0.2:80", "8081": "127.0.0.2:8081", "[::]:8443": "127.0.0.2:8443"} {
		out := render(t, "nginx.conf.tmpl", s, []string{"SWITCHYARD_LISTEN=" + listen})
		if !bytes.Contains(out, []byte("\n        listen "+want+";\n        access_log off;")) {
			t.Errorf("SWITCHYARD_LISTEN=%q: endpoint not on %s", listen, want)
		}
	}
	builtIn := render(t, "nginx.conf.tmpl", s, []string{"SWITCHYARD_NGINX_MODULES=none"})
	if bytes.Contains(builtIn, []byte("load_module")) || !bytes.Contains(builtIn, []byte("balancer_by_lua_block")) {
		t.Errorf("modules none: load_module lines left, or the Lua balancer gone")
	}
}

func TestHAProxyTemplate(t *testing.T) {
	haproxy := testenv.HAProxyBinary(t)
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) {
			out := render(t, "haproxy.cfg.tmpl", s, []string{"SWITCHYARD_LISTEN=127.0.0.1:18080"})
			golden(t, "haproxy-"+s.name+".cfg", out)
			noInjectedDirective(t, out, "include", "return 200", "backup")
			haproxyAccepts(t, haproxy, out)
		})
	}
}

// defectWants are the lines each defect scenario's nginx and HAProxy
// renders must hold: every service that can be routed keeps its route,
// and the skipped one says why.
var defectWants = map[string][2][]string{
	"port-zero": {
		{"server 10.0.0.5:9000 ", "server_name api.*;", "server 10.0.0.1:80 ", `# skipped "web"/"web-0": port 0 is not in 1-65535`},
		{"server 10.0.0.5:9000 10.0.0.5:9000 ", "use_backend svc_api ", "server 10.0.0.1:80 10.0.0.1:80 ", `# skipped "web"/"web-0": port 0 is not in 1-65535`},
	},
	"case-duplicates": {
		{"server 10.0.0.5:9000 ", "server_name api.*;", "upstream svc_WEB {", "server 10.0.0.7:80 ", `# skipped "web": name differs only in case from "WEB"`},
		{"server 10.0.0.5:9000 10.0.0.5:9000 ", "use_backend svc_api ", "use_backend svc_WEB ", "server 10.0.0.7:80 10.0.0.7:80 ", `# skipped "web": name differs only in case from "WEB"`},
	},
}

// TestTemplatesAcceptPortZeroAndCaseDuplicates is issue 10's defect: each
// catalog of defectScenarios made nginx -t reject the shipped template's
// render. Both proxies must accept it, and every service that can be
// routed keeps its route.
func TestTemplatesAcceptPortZeroAndCaseDuplicates(t *testing.T) {
	nginx := testenv.NginxBinary(t)
	haproxy := testenv.HAProxyBinary(t)
	env := []string{"SWITCHYARD_LISTEN=127.0.0.1:18080"}
	for _, s := range defectScenarios {
		t.Run(s.name, func(t *testing.T) {
			n := render(t, "nginx.conf.tmpl", s, env)
			nginxAccepts(t, nginx, n)
			h := render(t, "haproxy.cfg.tmpl", s, env)
			haproxyAccepts(t, haproxy, h)

			// The bad registration costs its own route, never another's.
			wantN, wantH := defectWants[s.name][0], defectWants[s.name][1]
			for _, w := range wantN {
				if !bytes.Contains(n, []byte(w)) {
					t.Errorf("nginx: %q missing:\n%s", w, n)
				}
			}
			for _, w := range wantH {
				if !bytes.Contains(h, []byte(w)) {
					t.Errorf("haproxy: %q missing:\n%s", w, h)
				}
			}
			if !bytes.Contains(n, []byte("# switchyard: ")) || !bytes.Contains(h, []byte("# switchyard: ")) {
				t.Errorf("skip summary missing")
			}
			golden(t, "nginx-"+s.name+".conf", n)
			golden(t, "haproxy-"+s.name+".cfg", h)
		})
	}
}

// TestExampleTemplates renders the operator examples in examples/templates
// through every scenario, hostile names included, and runs the real nginx -t
// on each result: an example that would break a proxy is a bug too.
// TestExampleTemplates runs every recipe of examples/templates through the
// shared scenarios (hostile names and addresses included) and has the
// real proxy validate each render; recipes_test.go checks what each one
// routes.
func TestExampleTemplates(t *testing.T) {
	examples, err := filepath.Glob(filepath.Join("..", "examples", "templates", "*.tmpl"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no example templates found: %v", err)
	}
	for _, src := range examples {
		file := filepath.Base(src)
		for _, s := range scenarios {
			t.Run(file+"/"+s.name, func(t *testing.T) {
				out := []byte(renderRecipe(t, file, worldOf(s)))
				if strings.HasPrefix(file, "haproxy-") {
					haproxyAccepts(t, testenv.HAProxyBinary(t), out)
					return
				}
				noInjectedDirective(t, out, "include", "return 200")
				nginxAccepts(t, testenv.NginxBinary(t), out)
			})
		}
	}
}

// worldOf turns a scenario into what the recipes read: its services in
// the local datacenter, no KV key set.
func worldOf(s scenario) recipeWorld {
	var w recipeWorld
	for _, name := range s.order {
		for _, in := range s.services[name] {
			w.instances = append(w.instances, recipeInstance{svc: name, id: in.id, addr: in.addr, port: in.port})
		}
	}
	return w
}

// noInjectedDirective fails the test when a line of out starts with one of
// the directives the hostile scenario tries to smuggle in.
func noInjectedDirective(t *testing.T, out []byte, directives ...string) {
	t.Helper()
	for _, line := range strings.Split(string(out), "\n") {
		l := strings.TrimSpace(line)
		for _, d := range directives {
			if strings.HasPrefix(l, d) {
				t.Errorf("injected directive: %q", line)
			}
		}
	}
}

// haproxyAccepts runs the real haproxy -c on out.
func haproxyAccepts(t testing.TB, haproxy string, out []byte) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(conf, out, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(haproxy, "-c", "-f", conf).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, b)
	}
}

// nginxAccepts runs the real nginx -t on out, in a prefix of its own.
func nginxAccepts(t testing.TB, nginx string, out []byte) {
	t.Helper()
	// A TCP route loads the stream module, a package of its own on Debian.
	if m := streamModuleRe.FindSubmatch(out); m != nil {
		_, err := os.Stat(string(m[1]))
		testenv.Need(t, err == nil, string(m[1])+" (Debian: libnginx-mod-stream)")
	}
	prefix := t.TempDir()
	conf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(conf, out, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(nginx, "-t", "-q", "-e", "stderr", "-p", prefix+"/", "-c", conf).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s\n%s", err, b, out)
	}
}
