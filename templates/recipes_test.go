package templates_test

// The recipes in examples/templates (issue 10): each is rendered by
// consul-template's own engine from a catalog, KV keys and datacenters
// seeded the way its template tests do, checked for what it must route,
// and validated by the real nginx -t or haproxy -c, hostile data included.

import (
	"cmp"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul-template/config"
	dep "github.com/hashicorp/consul-template/dependency"
	"github.com/hashicorp/consul-template/template"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// recipeInstance is one registration: dc "" is the local datacenter.
type recipeInstance struct {
	svc, id, addr string
	port          int
	tags          []string
	meta          map[string]string
	dc            string
}

// recipeWorld is what a recipe reads from Consul.
type recipeWorld struct {
	instances []recipeInstance
	kv        map[string]string // absent: the key does not exist
	dcs       []string          // nearest first; default dc1
}

// recipeKeys are the KV keys the recipes read, per service.
var recipeKeys = []string{"switchyard/bluegreen/%s", "switchyard/canary/%s", "switchyard/maintenance/%s"}

// brain seeds every query the recipes make: the local catalog, each
// service alone and by tag, in each other datacenter, its KV keys.
func (w recipeWorld) brain(t *testing.T) *template.Brain {
	t.Helper()
	b := template.NewBrain()
	w.dcs = w.datacenters()
	remember := func(d dep.Dependency, err error, v any) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		b.Remember(d, v)
	}
	dq, err := dep.NewCatalogDatacentersQuery(false)
	remember(dq, err, w.dcs)
	var snippets []*dep.CatalogSnippet
	for _, name := range w.names() {
		snippets = append(snippets, &dep.CatalogSnippet{Name: name})
		for _, q := range w.queries(name) {
			if hq, err := dep.NewHealthServiceQuery(q); err == nil {
				b.Remember(hq, w.passing(q))
			} // else consul-template cannot ask: a recipe must not try
		}
		for _, k := range recipeKeys {
			key := strings.ReplaceAll(k, "%s", name)
			kq, err := dep.NewKVGetQuery(key)
			if err != nil {
				continue
			}
			if v, ok := w.kv[key]; ok {
				b.Remember(kq, v)
			} else {
				b.Remember(kq, nil)
			}
		}
	}
	all, err := dep.NewKVGetQuery("switchyard/maintenance/_all")
	if v, ok := w.kv["switchyard/maintenance/_all"]; ok {
		remember(all, err, v)
	} else {
		remember(all, err, nil)
	}
	cq, err := dep.NewCatalogServicesQuery("")
	remember(cq, err, snippets)
	return b
}

// names are the local catalog's services, in Consul's (byte) order.
func (w recipeWorld) names() []string {
	var out []string
	for _, in := range w.instances {
		if in.dc == "" && !slices.Contains(out, in.svc) {
			out = append(out, in.svc)
		}
	}
	slices.Sort(out)
	return out
}

func (w recipeWorld) queries(name string) []string {
	out := []string{name, "blue." + name, "green." + name, "canary." + name}
	for _, dc := range w.dcs {
		out = append(out, name+"@"+dc)
	}
	return out
}

// passing answers one health query: "tag.name", "name@dc" or "name"
// (the local datacenter, the first of dcs).
func (w recipeWorld) passing(q string) []*dep.HealthService {
	name, dc, _ := strings.Cut(q, "@")
	svc, tag := name, ""
	if t, s, ok := strings.Cut(name, "."); ok {
		tag, svc = t, s
	}
	local := w.datacenters()[0]
	if dc == "" {
		dc = local
	}
	var out []*dep.HealthService
	for _, in := range w.instances {
		at := cmp.Or(in.dc, local)
		if in.svc != svc || at != dc || (tag != "" && !slices.Contains(in.tags, tag)) {
			continue
		}
		out = append(out, &dep.HealthService{Name: in.svc, ID: in.id, Address: in.addr, Port: in.port,
			Tags: dep.ServiceTags(in.tags), ServiceMeta: in.meta, Status: "passing"})
	}
	return out
}

func (w recipeWorld) datacenters() []string {
	if len(w.dcs) == 0 {
		return []string{"dc1"}
	}
	return w.dcs
}

func renderRecipe(t *testing.T, file string, w recipeWorld) string {
	t.Helper()
	tmpl, err := template.NewTemplate(&template.NewTemplateInput{
		Source:           filepath.Join("..", "examples", "templates", file),
		FunctionDenylist: []string{"plugin", "writeToFile"},
		ReaderFunc:       os.ReadFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := tmpl.Execute(&template.ExecuteInput{Brain: w.brain(t), Env: []string{"SWITCHYARD_LISTEN=127.0.0.1:18080"},
		Config: config.TestConfig(nil)})
	if err != nil {
		t.Fatalf("execute %s: %v", file, err)
	}
	if res.Missing.Len() > 0 {
		t.Fatalf("%s asked for data the test did not seed: %v", file, res.Missing.List())
	}
	return string(res.Output)
}

// block returns the lines of out from the first line matching start up
// to the next blank line.
func block(out, start string) string {
	i := strings.Index(out, start)
	if i < 0 {
		return ""
	}
	rest := out[i:]
	if j := strings.Index(rest, "\n\n"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

func wantIn(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("render lacks %q:\n%s", w, out)
		}
	}
}

func wantNotIn(t *testing.T, out string, bad ...string) {
	t.Helper()
	for _, b := range bad {
		if strings.Contains(out, b) {
			t.Errorf("render has %q:\n%s", b, out)
		}
	}
}

// hostileInstances are registrations no recipe may route or let into
// the config.
var hostileInstances = []recipeInstance{
	{svc: "web;evil", id: "h1", addr: "10.9.9.9", port: 80},
	{svc: "web", id: "h2", addr: "evil.example; include /etc/passwd", port: 80, tags: []string{"blue", "canary"}},
	{svc: "web", id: "h3", addr: "10.9.9.10", port: 0, tags: []string{"green"}},
}

var serverLineRe = regexp.MustCompile(`(?m)^\s*server \S+`)

func countServers(s string) int { return len(serverLineRe.FindAllString(s, -1)) }

func TestRecipeBlueGreen(t *testing.T) {
	nginx := testenv.NginxBinary(t)
	w := recipeWorld{instances: append([]recipeInstance{
		{svc: "web", id: "b1", addr: "10.0.0.1", port: 80, tags: []string{"blue"}},
		{svc: "web", id: "b2", addr: "10.0.0.2", port: 80, tags: []string{"blue"}},
		{svc: "web", id: "g1", addr: "10.0.0.3", port: 80, tags: []string{"green"}},
	}, hostileInstances...)}
	for _, c := range []struct {
		name, kv, live, preview string
	}{
		{"no key: blue is live", "", "10.0.0.1:80", "10.0.0.3:80"},
		{"green", "green", "10.0.0.3:80", "10.0.0.1:80"},
		{"anything else: blue", "purple; }", "10.0.0.1:80", "10.0.0.3:80"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w.kv = map[string]string{}
			if c.kv != "" {
				w.kv["switchyard/bluegreen/web"] = c.kv
			}
			out := renderRecipe(t, "nginx-blue-green.conf.tmpl", w)
			wantIn(t, block(out, "upstream bg_web_live"), c.live)
			wantIn(t, block(out, "upstream bg_web_preview"), c.preview)
			wantIn(t, out, "server_name web.*;", "server_name preview.web.*;")
			wantNotIn(t, out, "10.9.9.", "evil", "purple")
			nginxAccepts(t, nginx, []byte(out))
		})
	}
	// The live colour has no instance: the other one serves, no preview.
	w.instances, w.kv = w.instances[:2], map[string]string{"switchyard/bluegreen/web": "green"}
	out := renderRecipe(t, "nginx-blue-green.conf.tmpl", w)
	wantIn(t, out, "live colour green has no passing instance; blue serves", "upstream bg_web_live")
	wantIn(t, block(out, "upstream bg_web_live"), "10.0.0.1:80", "10.0.0.2:80")
	wantNotIn(t, out, "bg_web_preview")
	nginxAccepts(t, nginx, []byte(out))
}

func TestRecipeCanary(t *testing.T) {
	haproxy := testenv.HAProxyBinary(t)
	stable := []recipeInstance{
		{svc: "web", id: "s1", addr: "10.0.0.1", port: 80},
		{svc: "web", id: "s2", addr: "10.0.0.2", port: 80},
		{svc: "web", id: "s2-again", addr: "10.0.0.2", port: 80},
	}
	canary := recipeInstance{svc: "web", id: "c1", addr: "10.0.0.3", port: 80, tags: []string{"canary"}}
	for _, c := range []struct {
		name, kv, rule string
		instances      []recipeInstance
	}{
		{"default 10%", "", "{ rand(100) lt 10 }", append(slices.Clone(stable), canary)},
		{"25%", "25", "{ rand(100) lt 25 }", append(slices.Clone(stable), canary)},
		{"not a number: 10%", "25; server x", "{ rand(100) lt 10 }", append(slices.Clone(stable), canary)},
		{"no canary: stable takes all", "50", "use_backend web_stable if { var(txn.service) -m str web }", stable},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := recipeWorld{instances: append(c.instances, hostileInstances...), kv: map[string]string{}}
			if c.kv != "" {
				w.kv["switchyard/canary/web"] = c.kv
			}
			out := renderRecipe(t, "haproxy-canary.cfg.tmpl", w)
			wantIn(t, out, c.rule)
			if n := countServers(block(out, "\nbackend web_stable")); n != 2 {
				t.Errorf("web_stable has %d servers, want 2 (one per address):\n%s", n, out)
			}
			wantNotIn(t, out, "10.9.9.", "evil", "server x")
			haproxyAccepts(t, haproxy, []byte(out))
		})
	}
}

func TestRecipeTCP(t *testing.T) {
	haproxy := testenv.HAProxyBinary(t)
	tcp := func(port string) map[string]string {
		return map[string]string{"route_proto": "tcp", "route_port": port}
	}
	w := recipeWorld{instances: append([]recipeInstance{
		{svc: "db", id: "d1", addr: "10.0.0.1", port: 5432, meta: tcp("5432")},
		{svc: "db", id: "d2", addr: "10.0.0.2", port: 5432, meta: tcp("5432")},
		{svc: "db2", id: "x1", addr: "10.0.0.3", port: 5432, meta: tcp("5432")},
		{svc: "mq", id: "m1", addr: "10.0.0.4", port: 5672, meta: tcp("99999\n    bind :1")},
		{svc: "web", id: "w1", addr: "10.0.0.5", port: 80},
		{svc: "zz", id: "z1", addr: "10.0.0.6", port: 80, meta: tcp("18080")},
	}, hostileInstances...)}
	out := renderRecipe(t, "haproxy-tcp.cfg.tmpl", w)
	wantIn(t, out, `# skipped "zz": port 18080 is "SWITCHYARD_LISTEN"'s`)
	lst := block(out, "listen tcp_5432")
	wantIn(t, lst, "# service db", "bind 127.0.0.1:5432", "server 10.0.0.1:5432", "server 10.0.0.2:5432")
	wantIn(t, out, `# skipped "db2": port 5432 is "db"'s`, `# skipped "mq": route_port "99999\n    bind :1" is not 1-65535`)
	wantNotIn(t, out, "10.0.0.5", "bind :1\n", "10.9.9.")
	if strings.Count(out, "\nlisten ") != 1 {
		t.Errorf("want one listener:\n%s", out)
	}
	haproxyAccepts(t, haproxy, []byte(out))
}

func TestRecipeMaintenance(t *testing.T) {
	nginx := testenv.NginxBinary(t)
	inst := append([]recipeInstance{
		{svc: "api", id: "a1", addr: "10.0.0.1", port: 80},
		{svc: "web", id: "w1", addr: "10.0.0.2", port: 80},
	}, hostileInstances...)
	for _, c := range []struct {
		name         string
		kv           map[string]string
		want, unwant []string
	}{
		{"none", nil, []string{"proxy_pass http://svc_web;", "proxy_pass http://svc_api;"}, []string{"return 503 \"Back"}},
		{"web, hostile message", map[string]string{"switchyard/maintenance/web": "Back at 14:00\"; return 200 $x; } {"},
			[]string{`return 503 "Back at 14:00; return 200 x;  \n";`, "proxy_pass http://svc_api;", "Retry-After 300"},
			[]string{"proxy_pass http://svc_web;", "upstream svc_web"}},
		{"all", map[string]string{"switchyard/maintenance/_all": "Upgrade"},
			[]string{`return 503 "Upgrade\n";`}, []string{"proxy_pass"}},
		{"only dropped characters", map[string]string{"switchyard/maintenance/api": "{}$\"\\"},
			[]string{`return 503 "Down for maintenance\n";`, "proxy_pass http://svc_web;"}, []string{"proxy_pass http://svc_api;"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := renderRecipe(t, "nginx-maintenance.conf.tmpl", recipeWorld{instances: inst, kv: c.kv})
			wantIn(t, out, c.want...)
			wantNotIn(t, out, append(c.unwant, "10.9.9.", "evil")...)
			nginxAccepts(t, nginx, []byte(out))
		})
	}
}

func TestRecipeMultiDC(t *testing.T) {
	nginx := testenv.NginxBinary(t)
	remote := []recipeInstance{
		{svc: "web", id: "r1", addr: "10.2.0.1", port: 80, dc: "dc2"},
		{svc: "web", id: "r2", addr: "10.3.0.1", port: 80, dc: "dc3"},
		{svc: "web", id: "bad-dc", addr: "10.4.0.1", port: 80, dc: "dc 4"},
	}
	local := recipeInstance{svc: "web", id: "l1", addr: "10.1.0.1", port: 80}
	dcs := []string{"dc1", "dc2", "dc3", "dc 4"}

	out := renderRecipe(t, "nginx-multi-dc.conf.tmpl", recipeWorld{instances: append([]recipeInstance{local}, append(remote, hostileInstances...)...), dcs: dcs})
	up := block(out, "upstream svc_web")
	wantIn(t, up, "server 10.1.0.1:80 max_fails=1 fail_timeout=5s; # dc1", "server 10.2.0.1:80 max_fails=1 fail_timeout=5s backup; # dc2",
		"server 10.3.0.1:80 max_fails=1 fail_timeout=5s backup; # dc3")
	wantNotIn(t, out, "10.4.0.1", "10.9.9.", "evil")
	nginxAccepts(t, nginx, []byte(out))

	// No local instance left: the other datacenters serve as primaries
	// (nginx rejects an upstream of backups only). The service stays in
	// the local catalog, with an instance that is not passing.
	w := recipeWorld{instances: append([]recipeInstance{{svc: "web", id: "l-bad", addr: "10.1.0.9", port: 0}}, remote...), dcs: dcs}
	out = renderRecipe(t, "nginx-multi-dc.conf.tmpl", w)
	up = block(out, "upstream svc_web")
	wantIn(t, up, "server 10.2.0.1:80 max_fails=1 fail_timeout=5s; # dc2")
	wantNotIn(t, up, "backup")
	nginxAccepts(t, nginx, []byte(out))
}
