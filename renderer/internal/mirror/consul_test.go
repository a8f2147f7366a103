package mirror

import (
	"context"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	ctconfig "github.com/hashicorp/consul-template/config"
	"github.com/hashicorp/consul-template/manager"
	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard/switchyard/renderer/internal/funcs"
	"github.com/switchyard/switchyard/scripts/testenv"
)

// TestMain quiets consul-template, which logs through the std logger.
func TestMain(m *testing.M) {
	log.SetOutput(io.Discard)
	os.Exit(m.Run())
}

// serveMirror runs a mirror of the agent at addr on a unix socket and
// returns the address consul-template is given.
func serveMirror(t *testing.T, addr string) (*Mirror, string) {
	t.Helper()
	// t.TempDir can pass the 108 bytes a socket path may have.
	dir, err := os.MkdirTemp("", "mirror-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "c.sock"))
	if err != nil {
		t.Fatal(err)
	}
	m := New(Options{Upstream: Upstream{BaseURL: "http://" + addr}, MaxBackoff: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	run, srv := make(chan struct{}), make(chan struct{})
	go func() { m.Run(ctx); close(run) }()
	go func() { m.Serve(ctx, ln); close(srv) }()
	t.Cleanup(func() { cancel(); <-run; <-srv })
	return m, "unix://" + ln.Addr().String()
}

// runner starts a consul-template runner (once: one pass and done) on
// templates src -> dst reaching Consul at addr; with m, its service
// function reads m inline.
func runner(t *testing.T, addr string, once bool, m *Mirror, pairs ...string) *manager.Runner {
	t.Helper()
	cfg := ctconfig.DefaultConfig()
	cfg.Consul.Address = ctconfig.String(addr)
	cfg.Consul.Retry = &ctconfig.RetryConfig{Enabled: ctconfig.Bool(true), Attempts: ctconfig.Int(0),
		Backoff: ctconfig.TimeDuration(100 * time.Millisecond), MaxBackoff: ctconfig.TimeDuration(time.Second)}
	cfg.Once = once
	tcs := ctconfig.TemplateConfigs{}
	for i := 0; i < len(pairs); i += 2 {
		tcs = append(tcs, &ctconfig.TemplateConfig{Source: ctconfig.String(pairs[i]), Destination: ctconfig.String(pairs[i+1]),
			ExtFuncMap: funcs.Map(), ErrFatal: ctconfig.Bool(false)})
	}
	cfg.Templates = &tcs
	cfg.Finalize()
	if m != nil {
		inlineTemplates(t, m, cfg)
	}
	r, err := manager.NewRunner(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	go r.Start()
	t.Cleanup(r.Stop)
	return r
}

// inlineTemplates gives the templates of cfg an inline session of m.
func inlineTemplates(t *testing.T, m *Mirror, cfg *ctconfig.Config) {
	t.Helper()
	in, err := m.NewInline(InlineOptions{MaxStale: ctconfig.TimeDurationVal(cfg.MaxStale)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	if err := in.Apply(*cfg.Templates); err != nil {
		t.Fatal(err)
	}
}

// renderOnce renders every template once through addr and returns the
// outputs in order.
func renderOnce(t *testing.T, addr string, m *Mirror, outDir string, srcs []string) [][]byte {
	t.Helper()
	var pairs []string
	for i, s := range srcs {
		pairs = append(pairs, s, filepath.Join(outDir, strconv.Itoa(i)+".out"))
	}
	r := runner(t, addr, true, m, pairs...)
	select {
	case <-r.DoneCh:
	case err := <-r.ErrCh:
		t.Fatalf("render via %s: %v", addr, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("render via %s: no complete render in 30s", addr)
	}
	var outs [][]byte
	for i := range srcs {
		b, err := os.ReadFile(filepath.Join(outDir, strconv.Itoa(i)+".out"))
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, b)
	}
	return outs
}

// operatorTemplate reads every kind of data the mirror serves.
const operatorTemplate = `{{- range services }}{{ .Name }} [{{ join "," .Tags }}]
{{ range service .Name }}  {{ .Node }} {{ .Address }}:{{ .Port }} {{ .ID }} {{ .Status }} {{ .Tags }} {{ .ServiceMeta }} {{ .NodeAddress }}
{{ end }}{{ end }}
{{- range service "web|any" }}any {{ .ID }} {{ .Status }} {{ range .Checks }}{{ .CheckID }}={{ .Status }} {{ end }}
{{ end }}
{{- range service "web|passing,warning" }}pw {{ .ID }}
{{ end }}
{{- range service "web|critical" }}crit {{ .ID }}
{{ end }}
{{- range service "blue.web|any" }}tag {{ .ID }}
{{ end }}
{{- range $tag, $s := service "web|any" | byTag }}bytag {{ $tag }} {{ len $s }}
{{ end }}
{{- range $k, $s := service "web|any" | byMeta "zone" }}bymeta {{ $k }} {{ len $s }}
{{ end }}
{{- range nodes }}node {{ .Node }} {{ .Address }} {{ index .Meta "rack" }}
{{ end }}
{{- with node "ext1" }}ext1 {{ .Node.Address }} {{ range .Services }}{{ .Service }}:{{ .Port }} {{ end }}{{ end }}
flag={{ key "app/flag" }} missing={{ keyOrDefault "app/missing" "dflt" }}
{{ range tree "app/config" }}tree {{ .Key }}={{ .Value }}
{{ end }}{{ range ls "app/config" }}ls {{ .Key }}
{{ end }}`

// seed registers what the templates read: services with tags, meta and
// checks in every state, an external node, KV.
func seed(t *testing.T, c *api.Client) {
	t.Helper()
	reg := func(r *api.AgentServiceRegistration) {
		if err := c.Agent().ServiceRegister(r); err != nil {
			t.Fatal(err)
		}
	}
	for i, st := range []string{"passing", "warning", "critical", "passing"} {
		reg(&api.AgentServiceRegistration{ID: fmt.Sprintf("web-%d", i), Name: "web", Port: 8080 + i,
			Address: fmt.Sprintf("10.0.0.%d", i+1), Tags: []string{[]string{"blue", "green"}[i%2], "http"},
			Meta:  map[string]string{"zone": []string{"a", "b"}[i/2]},
			Check: &api.AgentServiceCheck{CheckID: fmt.Sprintf("web-%d-ttl", i), TTL: "1h", Status: st}})
	}
	reg(&api.AgentServiceRegistration{ID: "api-1", Name: "api", Port: 9000, Address: "10.0.1.1", Tags: []string{"v1"}})
	reg(&api.AgentServiceRegistration{ID: "db-1", Name: "db", Port: 5432, Address: "10.0.2.1"})
	if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "ext1", Address: "192.0.2.10",
		NodeMeta: map[string]string{"rack": "r1"},
		Service:  &api.AgentService{ID: "ext-1", Service: "ext", Port: 443, Tags: []string{"blue"}}}, nil); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"app/flag": "on", "app/config/a": "1", "app/config/b": "2", "app/config/sub/c": "3"} {
		if _, err := c.KV().Put(&api.KVPair{Key: k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// change makes one of each kind of change.
func change(t *testing.T, c *api.Client) {
	t.Helper()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Agent().ServiceDeregister("web-3"))
	must(c.Agent().UpdateTTL("web-0-ttl", "now failing", "fail"))
	must(c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "api-2", Name: "api", Port: 9001, Address: "10.0.1.2", Tags: []string{"v2"}}))
	_, err := c.KV().Put(&api.KVPair{Key: "app/config/a", Value: []byte("changed")}, nil)
	must(err)
	_, err = c.KV().Delete("app/config/b", nil)
	must(err)
	_, err = c.Catalog().Register(&api.CatalogRegistration{Node: "ext1", Address: "192.0.2.11", NodeMeta: map[string]string{"rack": "r2"}}, nil)
	must(err)
}

// seededMirror starts an agent seeded with what the operator template
// reads, a mirror of it, and writes the template into dir.
func seededMirror(t *testing.T) (c *testenv.Consul, m *Mirror, mirrorAddr, dir, op string) {
	t.Helper()
	c = testenv.StartConsul(t)
	seed(t, c.Client)
	m, mirrorAddr = serveMirror(t, c.Addr)
	dir = t.TempDir()
	op = filepath.Join(dir, "operator.tmpl")
	if err := os.WriteFile(op, []byte(operatorTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	return c, m, mirrorAddr, dir, op
}

func TestMirrorRendersByteIdenticalToConsul(t *testing.T) {
	c, m, mirrorAddr, _, op := seededMirror(t)
	shipped, _ := filepath.Glob("../../../templates/*.tmpl")
	if len(shipped) == 0 {
		t.Fatal("no shipped templates found")
	}
	srcs := append(shipped, op)
	for round, prep := range []func(){func() {}, func() { change(t, c.Client) }} {
		prep()
		direct := renderOnce(t, c.Addr, nil, t.TempDir(), srcs)
		// The mirror follows changes asynchronously: compare once it has.
		for _, via := range []struct {
			name string
			m    *Mirror
		}{{"the mirror", nil}, {"the mirror, service inline", m}} {
			testenv.Eventually(t, 10*time.Second, func() error {
				out := renderOnce(t, mirrorAddr, via.m, t.TempDir(), srcs)
				for i := range srcs {
					if string(out[i]) != string(direct[i]) {
						return fmt.Errorf("round %d, %s: via %s:\n%s\ndirect:\n%s", round, filepath.Base(srcs[i]), via.name, out[i], direct[i])
					}
				}
				return nil
			})
		}
		if n := testutil.ToFloat64(m.met.served.WithLabelValues("inline", "false")); n == 0 {
			t.Fatal("the inline renders never read the trailer's key")
		}
		if !strings.Contains(string(direct[len(srcs)-1]), "tree sub/c=3") {
			t.Fatalf("operator template rendered no KV:\n%s", direct[len(srcs)-1])
		}
	}
}

// startDefaultConsul runs a dev agent at Consul's default limits, as
// users run it.
func startDefaultConsul(t *testing.T) (*api.Client, string, func()) {
	t.Helper()
	c := testenv.StartConsulLimited(t, 0)
	return c.Client, c.Addr, c.CloseIdle
}

// connsTo counts established TCP connections to port (from anyone: only
// this test talks to its private agent).
func connsTo(t *testing.T, port int) int { return len(establishedTo(t, port)) }

// establishedTo is the set of local addresses with a connection
// established to port. /proc/net/tcp is read a page at a time, not at
// one instant: a socket closed and another opened during one read can
// both be in it.
func establishedTo(t *testing.T, port int) map[string]bool {
	t.Helper()
	set := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(l)
			if len(fs) < 4 || fs[3] != "01" { // 01: ESTABLISHED
				continue
			}
			if _, p, ok := strings.Cut(fs[2], ":"); ok {
				if v, _ := strconv.ParseInt(p, 16, 32); int(v) == port {
					set[fs[1]] = true
				}
			}
		}
	}
	return set
}

// peakConns samples the connections established to port until ctx ends
// and returns the most held at once. A connection counts when two
// samples in a row saw it, which a read that overlapped one socket's
// close and the next one's open cannot fake.
func peakConns(ctx context.Context, t *testing.T, port int, every time.Duration) <-chan int {
	out := make(chan int, 1)
	go func() {
		peak, prev := 0, map[string]bool{}
		for ctx.Err() == nil {
			cur, held := establishedTo(t, port), 0
			for a := range cur {
				if prev[a] {
					held++
				}
			}
			peak, prev = max(peak, held), cur
			sleepCtx(ctx, every)
		}
		out <- peak
	}()
	return out
}

// TestInlineRunnerFollowsConsul: a long-running runner whose service
// function reads the mirror inline renders what consul-template renders
// from the agent, after every kind of change, and a service that appears
// is never rendered without its instances (its first answer is read
// before the pass that shows it completes).
func TestInlineRunnerFollowsConsul(t *testing.T) {
	c, m, mirrorAddr, dir, op := seededMirror(t)
	live := filepath.Join(dir, "live.out")
	seen := map[string]bool{}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sampled := make(chan struct{})
	go func() { // every version of the live file
		defer close(sampled)
		for ctx.Err() == nil {
			if b, err := os.ReadFile(live); err == nil {
				seen[string(b)] = true
			}
			sleepCtx(ctx, time.Millisecond)
		}
	}()
	runner(t, mirrorAddr, false, m, op, live)
	same := func(step string) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, func() error {
			want := renderOnce(t, c.Addr, nil, t.TempDir(), []string{op})[0]
			got, _ := os.ReadFile(live)
			if string(got) != string(want) {
				return fmt.Errorf("%s: inline:\n%s\ndirect:\n%s", step, got, want)
			}
			return nil
		})
	}
	same("first render")
	change(t, c.Client)
	same("after a change of each kind")
	for i := range 2 {
		if err := c.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: fmt.Sprintf("cache-%d", i), Name: "cache",
			Port: 6379 + i, Address: fmt.Sprintf("10.0.3.%d", i+1)}); err != nil {
			t.Fatal(err)
		}
	}
	same("a new service")
	stop()
	<-sampled
	for out := range seen {
		if strings.Contains(out, "cache [") && !strings.Contains(out, " cache-0 ") {
			t.Fatalf("a render showed the new service without its instances:\n%s", out)
		}
	}
}

// TestInlineReadFailureHoldsThePass: a service call Consul answers with
// an error (a datacenter it has no path to) is retried, counted, and
// keeps its pass incomplete: nothing is written, as when
// consul-template's own watch has no data. Closing the session forgets
// what it queued.
func TestInlineReadFailureHoldsThePass(t *testing.T) {
	_, m, mirrorAddr, dir, _ := seededMirror(t)
	src, live := filepath.Join(dir, "t.tmpl"), filepath.Join(dir, "live.out")
	if err := os.WriteFile(src, []byte(`{{ range service "web" }}{{ .ID }} {{ end }}{{ range service "web@nodc" }}{{ .ID }}{{ end }}`), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runner(t, mirrorAddr, false, m, src, live)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := testutil.ToFloat64(m.met.inlineReads.WithLabelValues("error")); n < 3 {
			return fmt.Errorf("%v failed reads counted", n)
		}
		return nil
	})
	if q := testutil.ToFloat64(m.met.inlineQueued); q != 1 {
		t.Errorf("inline_queued = %v, want the failing read", q)
	}
	if _, err := os.Stat(live); !os.IsNotExist(err) {
		t.Errorf("a pass with a failing read was written (%v)", err)
	}
	r.Stop()
	m.mu.Lock()
	sessions := slices.Collect(maps.Values(m.inlines))
	m.mu.Unlock()
	for _, in := range sessions { // as the renderer's engine does on Stop
		in.Close()
	}
	if q := testutil.ToFloat64(m.met.inlineQueued); q != 0 {
		t.Errorf("inline_queued = %v after the session closed, want 0", q)
	}
}
