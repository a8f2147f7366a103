package templates_test

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/consul-template/config"
	dep "github.com/hashicorp/consul-template/dependency"
	"github.com/hashicorp/consul-template/template"

	"github.com/switchyard/switchyard/scripts/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files")

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

// brain seeds consul-template's Brain the way its own template tests do:
// the catalog query and one health query per service.
func brain(t *testing.T, s scenario) *template.Brain {
	t.Helper()
	b := template.NewBrain()
	d, err := dep.NewCatalogServicesQuery("")
	if err != nil {
		t.Fatal(err)
	}
	var snippets []*dep.CatalogSnippet
	for _, name := range s.order {
		snippets = append(snippets, &dep.CatalogSnippet{Name: name})
		hq, err := dep.NewHealthServiceQuery(name)
		if err != nil {
			// The template must never ask for such a name.
			continue
		}
		var hs []*dep.HealthService
		for _, in := range s.services[name] {
			hs = append(hs, &dep.HealthService{
				Node: "node1", ID: in.id, Name: name, Address: in.addr, Port: in.port, Status: "passing",
			})
		}
		b.Remember(hq, hs)
	}
	b.Remember(d, snippets)
	return b
}

func render(t *testing.T, src string, s scenario, env []string) []byte {
	t.Helper()
	tmpl, err := template.NewTemplate(&template.NewTemplateInput{
		Source:           src,
		FunctionDenylist: []string{"plugin", "writeToFile"},
		ReaderFunc:       os.ReadFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := tmpl.Execute(&template.ExecuteInput{Brain: brain(t, s), Env: env, Config: config.TestConfig(nil)})
	if err != nil {
		t.Fatalf("execute %s: %v", src, err)
	}
	if res.Missing.Len() > 0 {
		t.Fatalf("%s asked for data the scenario lacks: %v", src, res.Missing.List())
	}
	return res.Output
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

func TestHAProxyTemplate(t *testing.T) {
	haproxy := testenv.HAProxyBinary(t)
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) {
			out := render(t, "haproxy.cfg.tmpl", s, []string{"SWITCHYARD_LISTEN=127.0.0.1:18080"})
			golden(t, "haproxy-"+s.name+".cfg", out)
			noInjectedDirective(t, out, "include", "return 200", "backup")
			conf := filepath.Join(t.TempDir(), "haproxy.cfg")
			if err := os.WriteFile(conf, out, 0o644); err != nil {
				t.Fatal(err)
			}
			if b, err := exec.Command(haproxy, "-c", "-q", "-f", conf).CombinedOutput(); err != nil {
				t.Fatalf("haproxy -c: %v\n%s", err, b)
			}
		})
	}
}

// TestExampleTemplates renders the operator examples in examples/templates
// through every scenario, hostile names included, and runs the real nginx -t
// on each result: an example that would break a proxy is a bug too.
func TestExampleTemplates(t *testing.T) {
	nginx := testenv.NginxBinary(t)
	examples, err := filepath.Glob(filepath.Join("..", "examples", "templates", "nginx-*.tmpl"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no example templates found: %v", err)
	}
	for _, src := range examples {
		for _, s := range scenarios {
			t.Run(filepath.Base(src)+"/"+s.name, func(t *testing.T) {
				out := render(t, src, s, []string{"SWITCHYARD_LISTEN=127.0.0.1:18080"})
				noInjectedDirective(t, out, "include", "return 200")
				nginxAccepts(t, nginx, out)
			})
		}
	}
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

// nginxAccepts runs the real nginx -t on out, in a prefix of its own.
func nginxAccepts(t *testing.T, nginx string, out []byte) {
	t.Helper()
	prefix := t.TempDir()
	conf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(conf, out, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(nginx, "-t", "-q", "-e", "stderr", "-p", prefix+"/", "-c", conf).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s\n%s", err, b, out)
	}
}
