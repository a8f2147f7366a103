package e2e

// The multi-host environment of cluster_test.go: two simulated Docker
// hosts (each a Docker Engine of the test's own, a Consul client agent and
// a registrar), two proxy hosts (a client agent each; the first runs a
// renderer with nginx and one with HAProxy), three Consul servers, and a
// request load that records which backend answered each request.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"
	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// clusterEnv is the whole simulated data centre.
type clusterEnv struct {
	t            *testing.T // the top-level test: everything started lives as long as it
	consul       *testenv.Cluster
	hosts        []*simHost // host-a, host-b
	edge         *edgeHost  // the proxy host serving now
	spare        *testenv.Agent
	image        string
	registrarBin string
	rendererBin  string
	templates    map[string]string // proxy kind -> shipped template
	listen       map[string]string // proxy kind -> the address clients use
	svcs         []string

	mu      sync.Mutex
	results []clusterResult
}

// clusterResult is one row of the README table.
type clusterResult struct{ scenario, bound, measured string }

func (e *clusterEnv) record(scenario, bound, measured string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.results = append(e.results, clusterResult{scenario, bound, measured})
	e.t.Logf("RESULT | %s | %s | %s |", scenario, bound, measured)
}

// simHost is one simulated Docker host.
type simHost struct {
	name      string // its Consul node name and the registrar's --node-name
	short     string // prefix of its containers' names
	engine    *testenv.Dockerd
	agent     *testenv.Agent
	network   string
	subnet    *net.IPNet
	registrar *testenv.Process
	regStatus string // the registrar's --status-addr
	regGen    int    // registrar processes started so far (an upgrade is a new one)
	seq       map[string]int
	ctrs      []*clusterCtr // running containers, in start order
	down      bool          // lost: its instances must not be served
}

// clusterCtr is one fixture container; its name is also the NAME it
// answers with.
type clusterCtr struct {
	name, svc, id, ip string
	host              *simHost
}

func (c *clusterCtr) addr() string { return c.ip + ":8080" }

// edgeProxy is one renderer process and the proxy it supervises.
type edgeProxy struct {
	kind     string // nginx | haproxy
	listen   string
	conf     string // the live file
	renderer *testenv.Process
}

// edgeHost is a proxy host: a Consul client agent and a renderer per proxy.
type edgeHost struct {
	name    string
	agent   *testenv.Agent
	proxies []*edgeProxy
}

// startClusterEnv brings the data centre up: engines, Consul, registrars,
// the first containers and the renderers of edge-1, and waits until every
// container answers through both proxies.
func startClusterEnv(t *testing.T) *clusterEnv {
	t.Helper()
	start := time.Now()
	// Every real dependency first: under CI=true a missing one fails here.
	testenv.Docker(t)
	testenv.DockerdBinary(t)
	testenv.NginxBinary(t)
	testenv.HAProxyBinary(t)
	if _, err := testenv.ConsulBinaryPath(); err != nil {
		testenv.Need(t, false, fmt.Sprintf("consul v%s: %v", testenv.ConsulVersion, err))
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	e := &clusterEnv{
		t:            t,
		image:        testenv.WebappImage(t),
		registrarBin: testenv.BuildBinary(t, "github.com/switchyard/switchyard/registrar"),
		rendererBin:  testenv.BuildBinary(t, "github.com/switchyard/switchyard/renderer"),
		templates:    map[string]string{},
		// The address clients use: a floating address that moves to
		// whichever proxy host serves (scenario 4), as a VIP or a DNS name
		// does in production.
		listen: map[string]string{
			"nginx":   "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
			"haproxy": "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
		},
		svcs: []string{"api", "web"},
	}
	// The shipped templates, copied once: every renderer of the test,
	// before and after a failover, renders the same bytes, as an operator's
	// hosts share one release of them.
	tmplDir := t.TempDir()
	for kind, name := range map[string]string{"nginx": "nginx.conf.tmpl", "haproxy": "haproxy.cfg.tmpl"} {
		b, err := os.ReadFile(filepath.Join(root, "templates", name))
		if err != nil {
			t.Fatal(err)
		}
		e.templates[kind] = filepath.Join(tmplDir, name)
		if err := os.WriteFile(e.templates[kind], b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	built := time.Since(start)
	t.Cleanup(func() {
		if len(e.results) == 0 {
			return
		}
		var b strings.Builder
		b.WriteString("| scenario | bound | measured |\n|---|---|---|\n")
		for _, r := range e.results {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", r.scenario, r.bound, r.measured)
		}
		t.Logf("cluster results:\n%s", b.String())
	})

	// Two Docker hosts, each an engine of our own: the machine's engine
	// also runs other packages' tests, whose containers a registrar on it
	// would publish into this cluster.
	for _, n := range []string{"a", "b"} {
		h := &simHost{name: "host-" + n, short: n, seq: map[string]int{}}
		h.engine = testenv.StartDockerd(t, h.name)
		e.hosts = append(e.hosts, h)
	}
	errc := make(chan error, len(e.hosts))
	src := testenv.Docker(t)
	for _, h := range e.hosts {
		go func() { errc <- h.engine.LoadImage(src, e.image) }()
	}
	for range e.hosts {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range e.hosts {
		n, subnet, err := h.engine.NewNetwork("sy-" + h.name)
		if err != nil {
			t.Fatal(err)
		}
		h.network, h.subnet = n.Name, subnet
	}

	engines := time.Since(start)
	e.consul = testenv.StartCluster(t, testenv.ClusterOptions{
		Clients: []string{"host-a", "host-b", "edge-1", "edge-2"},
	})
	consulUp := time.Since(start)
	for _, h := range e.hosts {
		h.agent = e.consul.Agent(h.name)
		e.startRegistrar(t, h)
	}
	e.spare = e.consul.Agent("edge-2")
	t.Logf("cluster up: binaries and image built after %s, engines %s (%s) and %s (%s) with the image after %s, "+
		"Consul (3 servers; agents host-a, host-b, edge-1, edge-2) after %s, registrars ready after %s",
		ms(built), e.hosts[0].engine.Host, e.hosts[0].subnet, e.hosts[1].engine.Host, e.hosts[1].subnet,
		ms(engines), ms(consulUp), ms(time.Since(start)))

	// Host A runs more instances than host B: losing host B removes fewer
	// than half of the backends, which the renderer's stale guard applies
	// at once (it holds a render removing more, for --hold-down).
	for _, p := range []struct {
		svc  string
		n    int
		host int
	}{{svc: "web", n: 3, host: 0}, {svc: "api", n: 2, host: 0}, {svc: "web", n: 2, host: 1}, {svc: "api", n: 1, host: 1}} {
		for range p.n {
			e.run(t, e.hosts[p.host], p.svc)
		}
	}
	e.edge = e.startEdge(t, e.consul.Agent("edge-1"))
	took := e.waitServed(t, 60*time.Second)
	t.Logf("every container answers through nginx and HAProxy %s after the renderers started; set up in %s",
		took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return e
}

// freeAddrOn returns ip:PORT with a port free on ip a moment ago.
func freeAddrOn(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startRegistrar starts a new registrar process for h (the first, or the
// next version in an upgrade) and waits until it is ready.
// Its process lives as long as the whole test; t is the (sub)test waiting.
func (e *clusterEnv) startRegistrar(t *testing.T, h *simHost) {
	t.Helper()
	h.regGen++
	h.regStatus = freeAddrOn(t, h.agent.IP)
	name := fmt.Sprintf("registrar-%s-v%d", h.name, h.regGen)
	args := []string{
		"--node-name", h.name,
		// Container IP and port: the proxies reach containers of both
		// engines on their bridge networks.
		"--internal",
		"--resync", "5",
		"--status-addr", h.regStatus,
		"--docker-host", h.engine.Host,
		"consul://" + h.agent.Addr,
	}
	p := testenv.StartProcess(e.t, name, e.registrarBin, args)
	e.t.Cleanup(func() {
		if strings.Contains(p.Log(), "WARNING: DATA RACE") {
			e.t.Errorf("%s: the race detector reported a data race (see its log)", name)
		}
	})
	h.registrar = p
	testenv.Eventually(t, 30*time.Second, func() error {
		if p.Exited() {
			return fmt.Errorf("%s exited", name)
		}
		code, body, err := httpGet("http://" + h.regStatus + "/ready")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("%s /ready: %d %s", name, code, body)
		}
		return nil
	})
}

// startEdge starts, on the proxy host whose Consul agent is agent, a
// renderer supervising nginx and one supervising HAProxy, with nothing but
// the agent's address, the shipped templates and the listen address.
func (e *clusterEnv) startEdge(t *testing.T, agent *testenv.Agent) *edgeHost {
	t.Helper()
	eh := &edgeHost{name: agent.Name, agent: agent}
	for _, kind := range []string{"nginx", "haproxy"} {
		// A short dir: HAProxy's master socket lives next to the live file.
		dir, err := os.MkdirTemp("", "sy-"+agent.Name+"-"+kind+"-")
		if err != nil {
			t.Fatal(err)
		}
		e.t.Cleanup(func() { os.RemoveAll(dir) })
		p := &edgeProxy{kind: kind, listen: e.listen[kind]}
		args := []string{
			"--consul-addr", agent.Addr,
			"--status-addr", freeAddrOn(t, agent.IP),
			"--proxy", kind, "--proxy-mode", "supervise",
			"--wait", "50ms:500ms",
		}
		switch kind {
		case "nginx":
			if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
				t.Fatal(err)
			}
			p.conf = filepath.Join(dir, "nginx.conf")
			args = append(args, "--nginx-bin", testenv.NginxBinary(t), "--nginx-prefix", dir)
		case "haproxy":
			p.conf = filepath.Join(dir, "haproxy.cfg")
			args = append(args, "--haproxy-bin", testenv.HAProxyBinary(t))
		}
		args = append(args, "--template", e.templates[kind]+":"+p.conf)
		name := "renderer-" + kind + "-" + agent.Name
		p.renderer = testenv.StartProcess(e.t, name, e.rendererBin, args, "SWITCHYARD_LISTEN="+p.listen)
		proc := p.renderer
		e.t.Cleanup(func() {
			if strings.Contains(proc.Log(), "WARNING: DATA RACE") {
				e.t.Errorf("%s: the race detector reported a data race (see its log)", name)
			}
		})
		eh.proxies = append(eh.proxies, p)
	}
	return eh
}

// run starts one more instance of svc on h (restart policy always, as a
// production service has) and returns it once it runs.
func (e *clusterEnv) run(t *testing.T, h *simHost, svc string) *clusterCtr {
	t.Helper()
	h.seq[svc]++
	name := fmt.Sprintf("%s-%s-%d", h.short, svc, h.seq[svc])
	cl := h.engine.Client
	c, err := cl.CreateContainer(docker.CreateContainerOptions{
		Name: name,
		Config: &docker.Config{
			Image:  e.image,
			Labels: map[string]string{"SERVICE_NAME": svc, testenv.TestLabel: "1"},
			Env:    []string{"NAME=" + name},
		},
		HostConfig: &docker.HostConfig{NetworkMode: h.network, RestartPolicy: docker.AlwaysRestart()},
	})
	if err != nil {
		t.Fatalf("create %s on %s: %v", name, h.name, err)
	}
	if err := cl.StartContainer(c.ID, nil); err != nil {
		t.Fatalf("start %s on %s: %v", name, h.name, err)
	}
	in, err := cl.InspectContainerWithOptions(docker.InspectContainerOptions{ID: c.ID})
	if err != nil {
		t.Fatal(err)
	}
	nw, ok := in.NetworkSettings.Networks[h.network]
	if !ok || nw.IPAddress == "" {
		t.Fatalf("%s has no address on %s: %+v", name, h.network, in.NetworkSettings.Networks)
	}
	ctr := &clusterCtr{name: name, svc: svc, id: c.ID, ip: nw.IPAddress, host: h}
	h.ctrs = append(h.ctrs, ctr)
	return ctr
}

// stop is `docker stop` and `docker rm` of c: scaling down.
func (e *clusterEnv) stop(t *testing.T, c *clusterCtr) {
	t.Helper()
	cl := c.host.engine.Client
	if err := cl.StopContainer(c.id, 5); err != nil {
		t.Fatalf("docker stop %s: %v", c.name, err)
	}
	testenv.RemoveContainer(cl, c.id)
	c.host.ctrs = slices.DeleteFunc(c.host.ctrs, func(x *clusterCtr) bool { return x == c })
}

// expected returns the containers of svc the proxies must serve: every
// running one on a host that is up, sorted by name.
func (e *clusterEnv) expected(svc string) []*clusterCtr {
	var out []*clusterCtr
	for _, h := range e.hosts {
		if h.down {
			continue
		}
		for _, c := range h.ctrs {
			if c.svc == svc {
				out = append(out, c)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func names(cs []*clusterCtr) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.name
	}
	return out
}

// waitServed waits until, through every proxy of the serving edge host,
// every service is served by exactly its expected containers and the
// live files list exactly their addresses; it returns how long that took.
func (e *clusterEnv) waitServed(t *testing.T, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	testenv.Eventually(t, timeout, func() error { return e.served() })
	return time.Since(start)
}

func (e *clusterEnv) served() error {
	for _, p := range e.edge.proxies {
		if p.renderer.Exited() {
			return fmt.Errorf("%s exited", p.renderer.Name)
		}
		conf, err := os.ReadFile(p.conf)
		if err != nil {
			return err
		}
		servers := proxyServers(p.kind, conf)
		for _, svc := range e.svcs {
			want := e.expected(svc)
			var addrs []string
			for _, c := range want {
				addrs = append(addrs, c.addr())
			}
			sort.Strings(addrs)
			got := slices.Clone(servers["svc_"+svc])
			sort.Strings(got)
			if !slices.Equal(got, addrs) {
				return fmt.Errorf("%s: %s lists %v for %s, want %v", p.kind, p.conf, got, svc, addrs)
			}
			if _, err := serveExactly(p, svc, names(want)); err != nil {
				return err
			}
		}
	}
	return nil
}

// serveExactly sends requests for svc through p until every backend in
// want has answered (at most 12 per backend); every request must succeed
// and come from a backend in want. It returns the answers per backend.
func serveExactly(p *edgeProxy, svc string, want []string) (map[string]int, error) {
	seen := map[string]int{}
	for range 12 * len(want) {
		from, err := clusterGet(p.listen, svc)
		if err != nil {
			return seen, fmt.Errorf("%s %s: %w", p.kind, svc, err)
		}
		if !slices.Contains(want, from) {
			return seen, fmt.Errorf("%s %s: answered by %s, which is not among %v", p.kind, svc, from, want)
		}
		seen[from]++
		if len(seen) == len(want) {
			return seen, nil
		}
	}
	return seen, fmt.Errorf("%s %s: want answers from %v, saw %v", p.kind, svc, want, seen)
}

// countBackends sends n requests for svc through p and counts the answers
// per backend; failures are counted under "".
func countBackends(p *edgeProxy, svc string, n int) map[string]int {
	seen := map[string]int{}
	for range n {
		from, err := clusterGet(p.listen, svc)
		if err != nil {
			from = ""
		}
		seen[from]++
	}
	return seen
}

// clusterHTTP opens a new connection per request: a keep-alive client
// loses requests across any nginx reload (COMPAT §3), a known limit these
// tests do not measure.
var clusterHTTP = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// clusterGet sends GET / for svc.localhost to addr and returns the name of
// the backend that answered 200.
func clusterGet(addr, svc string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return "", err
	}
	req.Host = svc + ".localhost"
	resp, err := clusterHTTP.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %q", resp.StatusCode, bytes.TrimSpace(b))
	}
	f := strings.Fields(string(b)) // "hello from NAME (host path)"
	if len(f) < 3 || f[0] != "hello" {
		return "", fmt.Errorf("unexpected answer %q", b)
	}
	return f[2], nil
}

func httpGet(url string) (int, string, error) {
	resp, err := clusterHTTP.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// proxyServers parses a rendered nginx.conf (upstream blocks) or
// haproxy.cfg (backend sections): the server addresses per block.
func proxyServers(kind string, conf []byte) map[string][]string {
	out := map[string][]string{}
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(conf))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch kind {
		case "nginx":
			switch {
			case len(f) >= 3 && f[0] == "upstream" && f[2] == "{":
				cur = f[1]
				out[cur] = []string{}
			case cur != "" && len(f) >= 2 && f[0] == "server":
				out[cur] = append(out[cur], f[1])
			case cur != "" && f[0] == "}":
				cur = ""
			}
		case "haproxy":
			switch {
			case !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t"):
				cur = ""
				if f[0] == "backend" && len(f) >= 2 {
					cur = f[1]
					out[cur] = []string{}
				}
			case cur != "" && len(f) >= 3 && f[0] == "server":
				out[cur] = append(out[cur], f[2])
			}
		}
	}
	return out
}

// everyBlockServed is the invariant of scenario 3: each service keeps its
// upstream (nginx) or backend (HAProxy) with at least one server.
func everyBlockServed(kind string, svcs []string) func([]byte) error {
	return func(b []byte) error {
		servers := proxyServers(kind, b)
		for _, s := range svcs {
			if len(servers["svc_"+s]) == 0 {
				return fmt.Errorf("%s: svc_%s emptied or removed (servers: %v)", kind, s, servers)
			}
		}
		return nil
	}
}

// catalogCheck checks the Consul catalog for duplicates: for every
// service, one instance per expected container (its ID, node and
// address:port), nothing else, passing or not.
func (e *clusterEnv) catalogCheck() error {
	cl := e.consul.Servers[0].Client
	for _, s := range e.consul.Servers {
		if s.Running() {
			cl = s.Client
			break
		}
	}
	for _, svc := range e.svcs {
		entries, _, err := cl.Health().Service(svc, "", false, nil)
		if err != nil {
			return err
		}
		if err := matchCatalog(svc, entries, e.allRunning(svc)); err != nil {
			return err
		}
	}
	return nil
}

// allRunning is every container of svc, on a host that is up or not.
func (e *clusterEnv) allRunning(svc string) []*clusterCtr {
	var out []*clusterCtr
	for _, h := range e.hosts {
		for _, c := range h.ctrs {
			if c.svc == svc {
				out = append(out, c)
			}
		}
	}
	return out
}

func matchCatalog(svc string, entries []*api.ServiceEntry, want []*clusterCtr) error {
	ids, addrs := map[string]int{}, map[string]int{}
	for _, en := range entries {
		ids[en.Service.ID]++
		addrs[net.JoinHostPort(en.Service.Address, strconv.Itoa(en.Service.Port))]++
	}
	var problems []string
	for id, n := range ids {
		if n > 1 {
			problems = append(problems, fmt.Sprintf("ID %s %d times", id, n))
		}
	}
	for a, n := range addrs {
		if n > 1 {
			problems = append(problems, fmt.Sprintf("address %s %d times", a, n))
		}
	}
	if len(entries) != len(want) {
		problems = append(problems, fmt.Sprintf("%d instances for %d containers", len(entries), len(want)))
	}
	for _, c := range want {
		id := c.host.name + ":" + c.name + ":8080"
		i := slices.IndexFunc(entries, func(en *api.ServiceEntry) bool { return en.Service.ID == id })
		switch {
		case i < 0:
			problems = append(problems, "no instance "+id)
		case entries[i].Node.Node != c.host.name:
			problems = append(problems, fmt.Sprintf("%s on node %s, want %s", id, entries[i].Node.Node, c.host.name))
		case entries[i].Service.Address != c.ip || entries[i].Service.Port != 8080:
			problems = append(problems, fmt.Sprintf("%s at %s:%d, want %s", id, entries[i].Service.Address, entries[i].Service.Port, c.addr()))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("catalog of %s: %s", svc, strings.Join(problems, "; "))
	}
	return nil
}

// catalogSnapshot returns, per service, the sorted "ID@address:port" of
// every instance in the catalog.
func (e *clusterEnv) catalogSnapshot(cl *api.Client) (map[string][]string, error) {
	out := map[string][]string{}
	for _, svc := range e.svcs {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		entries, _, err := cl.Health().Service(svc, "", false, (&api.QueryOptions{}).WithContext(ctx))
		cancel()
		if err != nil {
			return nil, err
		}
		for _, en := range entries {
			out[svc] = append(out[svc], fmt.Sprintf("%s@%s:%d", en.Service.ID, en.Service.Address, en.Service.Port))
		}
		sort.Strings(out[svc])
	}
	return out, nil
}

// kill is the host lost: its registrar, Consul agent, dockerd and
// containerd are frozen together (SIGSTOP, so none reacts to another's
// death), then killed -9. Its containers keep running (their shims
// survive, as on a host whose daemons crashed): the proxies could still
// reach them, so requests that do prove the host's instances are still
// routed.
func (h *simHost) kill() {
	pids := []int{-h.registrar.Cmd.Process.Pid, h.agent.Pid()}
	pids = append(pids, h.engine.Pids()...)
	for _, pid := range pids {
		if pid != 0 {
			_ = syscall.Kill(pid, syscall.SIGSTOP)
		}
	}
	h.registrar.KillGroup()
	h.agent.Kill()
	h.engine.Kill()
	h.down = true
}

// hit is one request of a load: when it was answered, through which
// proxy, for which service, by which backend ("" when it failed).
type hit struct {
	at      time.Time
	proxy   string
	svc     string
	backend string
	err     string
}

// clusterLoad sends requests through proxies from one goroutine per
// proxy: one request per service every round, a round every 50ms, until
// end, or maxDur passed, or the round bound.
type clusterLoad struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	hits []hit
}

const loadPace = 50 * time.Millisecond

func startClusterLoad(t *testing.T, proxies []*edgeProxy, svcs []string, maxDur time.Duration) *clusterLoad {
	l := &clusterLoad{stop: make(chan struct{})}
	t.Cleanup(func() { l.end() })
	deadline := time.Now().Add(maxDur)
	maxRounds := int(maxDur/loadPace) + 1
	for _, p := range proxies {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(loadPace)
			defer tick.Stop()
			for range maxRounds {
				for _, svc := range svcs {
					from, err := clusterGet(p.listen, svc)
					h := hit{at: time.Now(), proxy: p.kind, svc: svc, backend: from}
					if err != nil {
						h.err = err.Error()
					}
					l.mu.Lock()
					l.hits = append(l.hits, h)
					l.mu.Unlock()
				}
				if time.Now().After(deadline) {
					return
				}
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	return l
}

// end stops the load and returns every hit.
func (l *clusterLoad) end() []hit {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.hits)
}

// snapshot returns the hits so far, without stopping.
func (l *clusterLoad) snapshot() []hit {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.hits)
}

// svcOf returns the service a backend serves: containers are named
// HOST-SERVICE-N.
func svcOf(backend string) string {
	f := strings.Split(backend, "-")
	if len(f) != 3 {
		return ""
	}
	return f[1]
}

// loadStats sums hits per proxy: answered by an instance of the service
// asked for, failed, answered by another service's container
// (misrouted), and the first failure or misroute.
type loadSums struct {
	ok, failed, misrouted map[string]int
	first                 string
}

func (*clusterLoad) stats(hits []hit) loadSums {
	s := loadSums{ok: map[string]int{}, failed: map[string]int{}, misrouted: map[string]int{}}
	for _, h := range hits {
		switch {
		case h.err != "":
			s.failed[h.proxy]++
			if s.first == "" {
				s.first = fmt.Sprintf("%s %s via %s: %s", h.at.Format("15:04:05.000"), h.svc, h.proxy, h.err)
			}
		case svcOf(h.backend) != h.svc:
			s.misrouted[h.proxy]++
			if s.first == "" {
				s.first = fmt.Sprintf("%s %s via %s: answered by %s", h.at.Format("15:04:05.000"), h.svc, h.proxy, h.backend)
			}
		default:
			s.ok[h.proxy]++
		}
	}
	return s
}

func (s loadSums) total() int {
	n := 0
	for _, m := range []map[string]int{s.ok, s.failed, s.misrouted} {
		for _, v := range m {
			n += v
		}
	}
	return n
}

func (s loadSums) bad() int {
	n := 0
	for _, m := range []map[string]int{s.failed, s.misrouted} {
		for _, v := range m {
			n += v
		}
	}
	return n
}

func (s loadSums) String() string {
	return fmt.Sprintf("answers %v, failed %v, misrouted %v (first: %s)", s.ok, s.failed, s.misrouted, s.first)
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }
