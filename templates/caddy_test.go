package templates_test

// Tests of Caddyfile.tmpl: golden renders of the shared scenarios, the
// real `caddy validate` on each, the routes of generated catalogs against
// the model of fuzz_test.go (the rules every shipped template shares),
// and Caddy's {$VAR} expansion kept out of the comments.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	dep "github.com/hashicorp/consul-template/dependency"

	"github.com/switchyard/switchyard/scripts/testenv"
)

const caddyTmpl = "Caddyfile.tmpl"

// caddyRules: Caddy's core has no TCP routes.
var caddyRules = proxyRules{}

// caddyEnv is the renderer environment the Caddy renders use.
var caddyEnv = []string{"SWITCHYARD_LISTEN=" + fuzzListen, "SWITCHYARD_CADDY_ADMIN=127.0.0.1:12019",
	"SWITCHYARD_CADDY_RESOLVER=127.0.0.1:18053", "SWITCHYARD_CADDY_REFRESH=100ms"}

func TestCaddyTemplate(t *testing.T) {
	caddy := testenv.CaddyBinary(t)
	for _, s := range append(slices.Clone(scenarios), defectScenarios...) {
		t.Run(s.name, func(t *testing.T) {
			out := render(t, caddyTmpl, s, caddyEnv)
			golden(t, "caddy-"+s.name+".Caddyfile", out)
			noInjectedDirective(t, out, "include", "return 200", "import")
			if err := checkCaddy(t, out, model(catalogOf(s), caddyRules)); err != nil {
				t.Errorf("%v\n%s", err, out)
			}
			caddyAccepts(t, caddy, out)
		})
	}
}

// TestCaddyTemplateDefaults checks the settings' defaults: the listen
// address is split into Caddy's site port and bind address, and the admin
// API follows the renderer's RENDERER_CADDY_ADMIN.
func TestCaddyTemplateDefaults(t *testing.T) {
	for _, k := range []string{"SWITCHYARD_LISTEN", "SWITCHYARD_CADDY_ADMIN", "SWITCHYARD_CADDY_RESOLVER", "SWITCHYARD_CADDY_REFRESH", "RENDERER_CADDY_ADMIN"} {
		t.Setenv(k, "")
	}
	two := scenarios[1]
	out := string(render(t, caddyTmpl, two, nil))
	for _, want := range []string{"    admin 127.0.0.1:2019\n", "http://:8080 {\n    bind 127.0.0.1\n", "dynamic srv web.8080.svc.switchyard. {",
		"resolvers 127.0.0.1:8053", "refresh 20ms"} {
		if !strings.Contains(out, want) {
			t.Errorf("default render lacks %q:\n%s", want, out)
		}
	}
	out = string(render(t, caddyTmpl, two, []string{"RENDERER_CADDY_ADMIN=127.0.0.1:2999", "SWITCHYARD_LISTEN=[::1]:9090"}))
	for _, want := range []string{"    admin 127.0.0.1:2999\n", "http://:9090 {\n    bind ::1\n", "web.9090.svc.switchyard."} {
		if !strings.Contains(out, want) {
			t.Errorf("render lacks %q:\n%s", want, out)
		}
	}
	if out := string(render(t, caddyTmpl, two, []string{"SWITCHYARD_LISTEN=:8081"})); strings.Contains(out, "bind") {
		t.Errorf("an empty listen host must bind every address:\n%s", out)
	}
}

// TestCaddyTemplateEnvInComment: an instance ID is written in a comment,
// and Caddy expands {$VAR} in the whole file before it reads comments. A
// variable whose value holds a newline would end the comment and put the
// rest of the value in the config; the template writes "{" as \x7b.
func TestCaddyTemplateEnvInComment(t *testing.T) {
	caddy := testenv.CaddyBinary(t)
	t.Setenv("SY_EVIL", "x\n}\nhttp://:1 {\n\trespond \"evil\"\n}\n{")
	c := catalog{{name: "web", instances: []*dep.HealthService{
		{Node: "n1", ID: "{$SY_EVIL}", Name: "web", Address: "no-ip", Port: 80, Status: "passing"},
		{Node: "n1", ID: "ok", Name: "web", Address: "10.0.0.1", Port: 80, Status: "passing"},
	}}, {name: "{$SY_EVIL}", instances: []*dep.HealthService{}}}
	out := renderCatalog(t, caddyTmpl, c, caddyEnv)
	if bytes.Contains(out, []byte("{$")) {
		t.Fatalf("a {$VAR} reached the Caddyfile:\n%s", out)
	}
	cfg := caddyAdapt(t, caddy, out)
	if bytes.Contains(cfg, []byte("evil")) {
		t.Errorf("the variable's value reached the config:\n%s", cfg)
	}
}

// TestCaddyTemplateCatalogs renders generated catalogs (fuzz_test.go's
// generator, seeds 1..N) and checks each against the model and with the
// real caddy validate.
func TestCaddyTemplateCatalogs(t *testing.T) {
	caddy := testenv.CaddyBinary(t)
	n := 30
	if testing.Short() {
		n = 10
	}
	seeds := make(chan int)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for seed := range seeds {
				t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
					c := genCatalog(rand.New(rand.NewSource(int64(seed))))
					out := renderCatalog(t, caddyTmpl, c, caddyEnv)
					if err := checkCaddy(t, out, model(c, caddyRules)); err != nil {
						t.Fatalf("%v\ncatalog:\n%s\nrendered:\n%s", err, describe(c), out)
					}
					caddyAccepts(t, caddy, out)
				})
			}
		})
	}
	for seed := 1; seed <= n; seed++ {
		seeds <- seed
	}
	close(seeds)
	wg.Wait()
}

var (
	caddyMatcherRe = regexp.MustCompile(`^    @svc_` + name + `_(\d+) \{$`)
	caddyHostRe    = regexp.MustCompile(`^        (host (\S+)|header_regexp Host \(\?i\)\^` + name + `\\\.)$`)
	caddyPathRe    = regexp.MustCompile(`^        path ` + path + ` ` + path + `/\*$`)
	caddyHandleRe  = regexp.MustCompile(`^    handle @svc_` + name + `_(\d+) \{$`)
	caddyPlainRe   = regexp.MustCompile(`^    @svc_` + name + `_plain not header X-Forwarded-Proto https$`)
	caddyRedirRe   = regexp.MustCompile(`^        redir @svc_` + name + `_plain https://\{host\}\{uri\} 308$`)
	caddyStripRe   = regexp.MustCompile(`^        uri strip_prefix ` + path + `$`)
	caddyProxyRe   = regexp.MustCompile(`^        reverse_proxy((?: \S+)+) \{$`)
	caddySRVRe     = regexp.MustCompile(`^            dynamic srv ` + lname + `\.` + fuzzPort + `\.svc\.switchyard\. \{$`)
	caddyPolicyRe  = regexp.MustCompile(`^            lb_policy cookie sy_` + lname + `$`)
	caddyHealthRe  = regexp.MustCompile(`^            health_uri ` + path + `$`)
	caddyBlock     = indent([]string{"\t\t\t\tresolvers 127.0.0.1:18053", "\t\t\t\trefresh 100ms", "\t\t\t}", "\t\t\ttransport http {",
		"\t\t\t\tdial_timeout 2s", "\t\t\t# A dying instance is retried on another of the same service.", "\t\t\tlb_try_duration 2s", "\t\t}", "\t}",
		"\t\theader Content-Type application/grpc*", "\t\t\t\tversions h2c 2", "\t\t\thealth_interval 2s"})
	caddyFixedOnce sync.Once
	caddyFixed     map[string]bool
)

// checkCaddy reads a Caddy render back into routes: the handles in
// order, each with its matcher (host, path, gRPC) and its reverse_proxy
// (upstreams, pool, settings).
func checkCaddy(t testing.TB, out []byte, want expectation) error {
	caddyFixedOnce.Do(func() { caddyFixed = lineSet(renderCatalog(t, caddyTmpl, nil, caddyEnv), caddyBlock) })
	if err := checkComments(out, want, caddyFixed, caddyMatcherRe, caddyHostRe, caddyPathRe, caddyHandleRe, caddyPlainRe,
		caddyRedirRe, caddyStripRe, caddyProxyRe, caddySRVRe, caddyPolicyRe, caddyHealthRe); err != nil {
		return err
	}
	got := reading{routes: map[string]*route{}}
	matchers := map[string]hostRoute{}
	plain := map[string]bool{}
	var hr hostRoute
	var matcher string
	var cur *route
	for _, l := range strings.Split(string(out), "\n") {
		if matcher != "" {
			if l == "    }" {
				matchers[matcher], matcher = hr, ""
			} else if err := caddyMatcherLine(l, &hr); err != nil {
				return err
			}
			continue
		}
		switch m := []any{nil}; {
		case match(caddyMatcherRe, l, &m):
			matcher, hr = m[1].(string)+"_"+m[2].(string), hostRoute{kind: "http", path: "/", service: m[1].(string)}
		case match(caddyPlainRe, l, &m):
			plain[m[1].(string)] = true
		case match(caddyHandleRe, l, &m):
			h, ok := matchers[m[1].(string)+"_"+m[2].(string)]
			if !ok || h.service != m[1] {
				return fmt.Errorf("%q: no such matcher", l)
			}
			got.hosts = append(got.hosts, h)
			cur = &route{name: h.service, proto: "http"}
			if h.kind == "grpc" {
				cur.proto = "grpc"
			}
		case cur == nil:
		case match(caddyRedirRe, l, &m):
			cur.https = plain[m[1].(string)] && m[1] == cur.name
		case match(caddyStripRe, l, &m):
			cur.strip = m[1] == got.hosts[len(got.hosts)-1].path
		case match(caddyProxyRe, l, &m):
			cur.servers = strings.Fields(m[1].(string))
		case match(caddySRVRe, l, &m):
			if m[1] != strings.ToLower(cur.name) {
				return fmt.Errorf("route %s asks for pool %s", cur.name, m[1])
			}
		case l == "                versions h2c 2":
			if cur.proto != "grpc" {
				return fmt.Errorf("route %s: h2c without gRPC", cur.name)
			}
		case match(caddyPolicyRe, l, &m):
			cur.sticky = m[1] == strings.ToLower(cur.name)
		case match(caddyHealthRe, l, &m):
			cur.health = m[1].(string)
		case l == "    }":
			// Every handle of a service says the same.
			if prev := got.routes[cur.name]; prev != nil && fmt.Sprint(*prev) != fmt.Sprint(*cur) {
				return fmt.Errorf("route %s: handles differ: %+v, %+v", cur.name, *prev, *cur)
			}
			got.routes[cur.name], cur = cur, nil
		}
	}
	return compare(got, want, true, caddyApplied)
}

// caddyMatcherLine reads a line of a named matcher into hr.
func caddyMatcherLine(l string, hr *hostRoute) error {
	switch m := []any{nil}; {
	case match(caddyHostRe, l, &m):
		hr.host = m[2].(string)
		if m[3] != "" {
			hr.host = strings.ToLower(m[3].(string)) + ".*"
		}
	case match(caddyPathRe, l, &m) && m[1] == m[2] && m[1] != "/":
		hr.path = m[1].(string)
	case l == "        header Content-Type application/grpc*":
		hr.kind = "grpc"
	default:
		return fmt.Errorf("matcher line %q", l)
	}
	return nil
}

// caddyApplied is a route as Caddy 2.6 serves it: WebSocket as any
// request, no weights, and upstreams without server names.
func caddyApplied(r route) route {
	r = effective(r)
	if r.proto == "ws" {
		r.proto = "http"
	}
	r.servers = slices.Clone(r.servers)
	for i, s := range r.servers {
		r.servers[i] = s[strings.IndexByte(s, ' ')+1:]
	}
	r.weights = nil
	return r
}

// caddyAccepts runs the real caddy validate on out.
func caddyAccepts(t testing.TB, caddy string, out []byte) {
	t.Helper()
	if b, err := caddyCmd(t, caddy, out, "validate").CombinedOutput(); err != nil {
		t.Fatalf("caddy validate: %v\n%s\n%s", err, b, out)
	}
}

// caddyAdapt returns the JSON config Caddy reads from out.
func caddyAdapt(t testing.TB, caddy string, out []byte) []byte {
	t.Helper()
	cmd := caddyCmd(t, caddy, out, "adapt")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil || !json.Valid(b) {
		t.Fatalf("caddy adapt: %v\n%s\n%s", err, stderr.Bytes(), out)
	}
	return b
}

func caddyCmd(t testing.TB, caddy string, out []byte, verb string) *exec.Cmd {
	dir := t.TempDir()
	conf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(conf, out, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddy, verb, "--config", conf, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	return cmd
}

// indent writes each leading tab of lines as the template's four spaces.
func indent(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		t := len(l) - len(strings.TrimLeft(l, "\t"))
		out[i] = strings.Repeat("    ", t) + l[t:]
	}
	return out
}
