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
			if err := checkCaddy(t, out, model(catalogOf(s))); err != nil {
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
		"resolvers 127.0.0.1:8053", "refresh 100ms"} {
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
					if err := checkCaddy(t, out, model(c)); err != nil {
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
	caddyMatcherRe = regexp.MustCompile(`^    @svc_([A-Za-z0-9][A-Za-z0-9_-]{0,62}) header_regexp Host \(\?i\)\^([A-Za-z0-9][A-Za-z0-9_-]{0,62})\\\.$`)
	caddyHandleRe  = regexp.MustCompile(`^    handle @svc_([A-Za-z0-9][A-Za-z0-9_-]{0,62}) \{$`)
	caddyProxyRe   = regexp.MustCompile(`^        reverse_proxy((?: \S+)+) \{$`)
	caddySRVRe     = regexp.MustCompile(`^            dynamic srv ([a-z0-9_-]+)\.` + strings.Split(fuzzListen, ":")[1] + `\.svc\.switchyard\. \{$`)
	caddyBlock     = indent([]string{"\t\t\t\tresolvers 127.0.0.1:18053", "\t\t\t\trefresh 100ms", "\t\t\t}", "\t\t\ttransport http {",
		"\t\t\t\tdial_timeout 2s", "\t\t\t# A dying instance is retried on another of the same service.", "\t\t\tlb_try_duration 2s", "\t\t}", "\t}"})
	caddyFixedOnce sync.Once
	caddyFixed     map[string]bool
)

// checkCaddy checks a render against the model: the skip lines and
// summary, and per route its matcher, handle, upstreams in order, and the
// pool name its dynamic source asks for.
func checkCaddy(t testing.TB, out []byte, want expectation) error {
	caddyFixedOnce.Do(func() { caddyFixed = lineSet(renderCatalog(t, caddyTmpl, nil, caddyEnv), caddyBlock) })
	if err := checkComments(out, want, caddyFixed, caddyMatcherRe, caddyHandleRe, caddyProxyRe, caddySRVRe); err != nil {
		return err
	}
	var got []route
	var handles, pools []string
	for _, l := range strings.Split(string(out), "\n") {
		if m := caddyMatcherRe.FindStringSubmatch(l); m != nil {
			if m[1] != m[2] {
				return fmt.Errorf("matcher @svc_%s matches host %s", m[1], m[2])
			}
			got = append(got, route{name: m[1]})
		} else if m := caddyHandleRe.FindStringSubmatch(l); m != nil {
			handles = append(handles, m[1])
		} else if m := caddyProxyRe.FindStringSubmatch(l); m != nil && len(got) > 0 {
			got[len(got)-1].servers = strings.Fields(m[1])
		} else if m := caddySRVRe.FindStringSubmatch(l); m != nil {
			pools = append(pools, m[1])
		}
	}
	var names, lower []string
	var wantRoutes []route
	for _, r := range want.routes {
		names, lower = append(names, r.name), append(lower, strings.ToLower(r.name))
		cr := route{name: r.name}
		for _, s := range r.servers {
			cr.servers = append(cr.servers, s[strings.IndexByte(s, ' ')+1:]) // no server names in Caddy
		}
		wantRoutes = append(wantRoutes, cr)
	}
	if !slices.Equal(handles, names) || !slices.Equal(pools, lower) {
		return fmt.Errorf("handle %v, pools %v; model routes %v", handles, pools, names)
	}
	return sameRoutes(got, wantRoutes)
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
