package templates_test

// The catalog fuzz test of issue 10: whatever the catalog holds, the
// shipped templates render a config the real nginx and HAProxy accept,
// route exactly what a Go model of the rules says can be routed, inject
// nothing, and count every "# skipped" line in the "# switchyard:" summary.

import (
	"flag"
	"fmt"
	"math"
	"math/rand"
	"net/netip"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dep "github.com/hashicorp/consul-template/dependency"

	"github.com/switchyard/switchyard/scripts/testenv"
)

var catalogs = flag.Int("catalogs", 200, "generated catalogs TestCatalogFuzz renders (-short: 40)")

const fuzzListen = "127.0.0.1:18080"

// TestCatalogFuzz renders generated catalogs (seeds 1..-catalogs, so a
// failure names a seed to replay with -run 'TestCatalogFuzz/seed-N$')
// through both shipped templates and has the real proxies check each
// render.
func TestCatalogFuzz(t *testing.T) {
	p := proxies(t)
	n := *catalogs
	if testing.Short() {
		n = min(n, 40)
	}
	start := time.Now()
	t.Cleanup(func() { t.Logf("%d catalogs rendered and checked in %v", n, time.Since(start).Round(time.Millisecond)) })
	// Twice as many workers as CPUs, whatever -parallel says: half the time
	// of a catalog is spent waiting for nginx -t and haproxy -c.
	seeds := make(chan int)
	var wg sync.WaitGroup
	for range 2 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for seed := range seeds {
				t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
					checkCatalog(t, p, genCatalog(rand.New(rand.NewSource(int64(seed)))))
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

// FuzzCatalog is the same check on catalogs read from the fuzzer's text:
// one instance a line,
//
//	service|id|address|port|node address|tags|meta
//
// Any field may be a Go-quoted string (for newlines and other bytes); tags
// are comma-separated, meta k=v pairs comma-separated; a line with only a
// service name is a service without a passing instance. Seeds:
// testdata/fuzz/FuzzCatalog (run by a plain go test); fuzz with
// go test ./templates -run '^$' -fuzz FuzzCatalog.
func FuzzCatalog(f *testing.F) {
	p := proxies(f)
	f.Fuzz(func(t *testing.T, text string) {
		if len(text) > 1<<16 {
			t.Skip("larger than 64 KiB")
		}
		checkCatalog(t, p, parseCatalog(text))
	})
}

type proxyBins struct{ nginx, haproxy string }

func proxies(t testing.TB) proxyBins {
	return proxyBins{nginx: testenv.NginxBinary(t), haproxy: testenv.HAProxyBinary(t)}
}

// checkCatalog renders c through both templates and checks each render
// against the model, then has the real proxy check it.
func checkCatalog(t testing.TB, p proxyBins, c catalog) {
	t.Helper()
	want := model(c)
	env := []string{"SWITCHYARD_LISTEN=" + fuzzListen}
	n := renderCatalog(t, "nginx.conf.tmpl", c, env)
	h := renderCatalog(t, "haproxy.cfg.tmpl", c, env)
	if t.Failed() {
		return
	}
	fail := func(proxy string, out []byte, err error) {
		t.Helper()
		t.Fatalf("%s: %v\ncatalog:\n%s\nrendered:\n%s", proxy, err, describe(c), out)
	}
	if err := checkNginx(t, n, want); err != nil {
		fail("nginx", n, err)
	}
	if err := checkHAProxy(t, h, want); err != nil {
		fail("haproxy", h, err)
	}
	nginxAccepts(t, p.nginx, n)
	haproxyAccepts(t, p.haproxy, h)
}

// route is one routed service as the model expects it: the service name
// and its servers, each as "<name> <address:port>" (HAProxy's server
// name: the address:port in lower case, an IPv6 one without brackets and
// "_" before the port, so a server keeps its name while it exists).
type route struct {
	name    string
	servers []string
}

type expectation struct {
	routes                            []route
	skippedServices, skippedInstances int
	noRouteLines                      int
}

// haproxyServerName is the HAProxy server name of server (address:port,
// IPv6 in brackets): unique among a service's instances, since the
// templates skip a second instance of one address:port written alike but
// for case.
func haproxyServerName(server string) string {
	return strings.NewReplacer("[", "", "]:", "_").Replace(strings.ToLower(server))
}

var tokenRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

// model is the templates' rules in Go, with net/netip deciding what is an
// IP address, so the regexps in the templates are checked too.
func model(c catalog) expectation {
	var e expectation
	routed := map[string]bool{} // lower-case names with a route
	for _, s := range c {
		if s.name == "consul" {
			continue
		}
		key := strings.ToLower(s.name)
		if len(s.name) > 63 || strings.Contains(s.name, ".") || !tokenRe.MatchString(s.name) || routed[key] {
			e.skippedServices++
			continue
		}
		r := route{name: s.name}
		seen := map[string]bool{}
		for _, in := range s.instances {
			addr := in.Address
			if addr == "" {
				addr = in.NodeAddress
			}
			a, err := netip.ParseAddr(addr)
			server := addr
			if strings.Contains(addr, ":") {
				server = "[" + addr + "]"
			}
			server += ":" + strconv.Itoa(in.Port)
			// nginx 1.22 cannot read seven groups and a trailing "::".
			nginxCannot := strings.HasSuffix(addr, "::") && strings.Count(addr, ":") == 8
			if err != nil || a.Zone() != "" || nginxCannot || in.Port < 1 || in.Port > 65535 || seen[strings.ToLower(server)] {
				e.skippedInstances++
				continue
			}
			seen[strings.ToLower(server)] = true
			r.servers = append(r.servers, haproxyServerName(server)+" "+server)
		}
		if len(r.servers) == 0 {
			e.noRouteLines++
			continue
		}
		routed[key] = true
		e.routes = append(e.routes, r)
	}
	return e
}

var (
	summaryRe = regexp.MustCompile(`(?m)\A# Generated [^\n]*\n# every [^\n]*\n# switchyard: (\d+) instances and (\d+) services skipped\n`)
	// A Go-quoted string, as printf %q writes it.
	quoted          = `"(?:[^"\\]|\\.)*"`
	skipServiceRe   = regexp.MustCompile(`^ *# skipped ` + quoted + `: \S`)
	skipInstanceRe  = regexp.MustCompile(`^ *# skipped ` + quoted + `/` + quoted + `: \S`)
	noRouteRe       = regexp.MustCompile(`^ *# no route for ` + quoted + `: no (passing instance|instance can be routed)$`)
	nginxUpstreamRe = regexp.MustCompile(`^    upstream svc_([A-Za-z0-9][A-Za-z0-9_-]{0,62}) \{$`)
	nginxServerRe   = regexp.MustCompile(`^        server (\S+) max_fails=1 fail_timeout=5s;$`)
	nginxNameRe     = regexp.MustCompile(`^        server_name ([A-Za-z0-9][A-Za-z0-9_-]{0,62})\.\*;$`)
	nginxPassRe     = regexp.MustCompile(`^            proxy_pass http://svc_([A-Za-z0-9][A-Za-z0-9_-]{0,62});$`)
	nginxLuaRe      = regexp.MustCompile(`^        balancer_by_lua_block \{ switchyard\.balance\("svc_([A-Za-z0-9][A-Za-z0-9_-]{0,62})"\) \}$`)
	haproxyUseRe    = regexp.MustCompile(`^    use_backend svc_([A-Za-z0-9][A-Za-z0-9_-]{0,62}) if \{ var\(txn\.service\) -m str ([a-z0-9_-]+) \}$`)
	haproxyBackRe   = regexp.MustCompile(`^backend svc_([A-Za-z0-9][A-Za-z0-9_-]{0,62})$`)
	haproxyServerRe = regexp.MustCompile(`^    server ([0-9a-f.:_]+ \S+) check inter 2s fall 1 rise 1$`)
)

// nginxFixed and haproxyFixed are the lines a render may hold besides
// comments and the per-service lines matched above: the skeleton (the
// render of an empty catalog) and the fixed lines of a service's blocks.
var (
	skeletonOnce             sync.Once
	nginxFixed, haproxyFixed map[string]bool
	nginxBlock, haproxyBlock = []string{"        keepalive 16;", "    }", "    server {", "        listen " + fuzzListen + ";", "        location / {", "        }"}, []string{"    balance roundrobin"}
)

func fixedLines(t testing.TB) {
	skeletonOnce.Do(func() {
		env := []string{"SWITCHYARD_LISTEN=" + fuzzListen}
		nginxFixed = lineSet(renderCatalog(t, "nginx.conf.tmpl", nil, env), nginxBlock)
		haproxyFixed = lineSet(renderCatalog(t, "haproxy.cfg.tmpl", nil, env), haproxyBlock)
	})
}

func lineSet(out []byte, extra []string) map[string]bool {
	m := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		m[l] = true
	}
	for _, l := range extra {
		m[l] = true
	}
	return m
}

// checkComments checks what every render shares: the summary counts the
// "# skipped" lines and matches the model, comments are well formed and
// short enough for nginx (a token, comments included, must fit its 4 KiB
// buffer), and no line is something the templates do not write.
func checkComments(out []byte, want expectation, fixed map[string]bool, dynamic ...*regexp.Regexp) error {
	m := summaryRe.FindSubmatch(out)
	if m == nil {
		return fmt.Errorf("no skip summary at the top")
	}
	inst, _ := strconv.Atoi(string(m[1]))
	svc, _ := strconv.Atoi(string(m[2]))
	if inst != want.skippedInstances || svc != want.skippedServices {
		return fmt.Errorf("summary says %d instances and %d services skipped, model %d and %d", inst, svc, want.skippedInstances, want.skippedServices)
	}
	var skipI, skipS, noRoute int
lines:
	for i, l := range strings.Split(string(out), "\n") {
		if len(l) > 3000 {
			return fmt.Errorf("line %d is %d bytes long", i+1, len(l))
		}
		switch {
		case skipInstanceRe.MatchString(l):
			skipI++
		case skipServiceRe.MatchString(l):
			skipS++
		case noRouteRe.MatchString(l):
			noRoute++
		case strings.HasPrefix(strings.TrimSpace(l), "# skipped") || strings.HasPrefix(strings.TrimSpace(l), "# no route"):
			return fmt.Errorf("malformed line %d: %q", i+1, l)
		case fixed[l], i == 2:
		default:
			for _, re := range dynamic {
				if re.MatchString(l) {
					continue lines
				}
			}
			return fmt.Errorf("line %d is not one the template writes: %q", i+1, l)
		}
	}
	if skipI != inst || skipS != svc {
		return fmt.Errorf("%d instance and %d service skip lines, summary says %d and %d", skipI, skipS, inst, svc)
	}
	if noRoute != want.noRouteLines {
		return fmt.Errorf("%d no-route lines, model %d", noRoute, want.noRouteLines)
	}
	return nil
}

func checkNginx(t testing.TB, out []byte, want expectation) error {
	fixedLines(t)
	if err := checkComments(out, want, nginxFixed, nginxUpstreamRe, nginxServerRe, nginxNameRe, nginxPassRe, nginxLuaRe); err != nil {
		return err
	}
	var got []route
	var names, passes, balancers []string
	for _, l := range strings.Split(string(out), "\n") {
		if m := nginxUpstreamRe.FindStringSubmatch(l); m != nil {
			got = append(got, route{name: m[1]})
		} else if m := nginxServerRe.FindStringSubmatch(l); m != nil && len(got) > 0 {
			got[len(got)-1].servers = append(got[len(got)-1].servers, m[1])
		} else if m := nginxNameRe.FindStringSubmatch(l); m != nil {
			names = append(names, m[1])
		} else if m := nginxPassRe.FindStringSubmatch(l); m != nil {
			passes = append(passes, m[1])
		} else if m := nginxLuaRe.FindStringSubmatch(l); m != nil {
			balancers = append(balancers, m[1]) // issue 9: each upstream feeds its own list
		}
	}
	var wantNames []string
	var wantRoutes []route
	for _, r := range want.routes {
		wantNames = append(wantNames, r.name)
		nr := route{name: r.name}
		for _, s := range r.servers {
			nr.servers = append(nr.servers, s[strings.IndexByte(s, ' ')+1:]) // nginx servers have no name
		}
		wantRoutes = append(wantRoutes, nr)
	}
	if !slices.Equal(names, wantNames) || !slices.Equal(passes, wantNames) || !slices.Equal(balancers, wantNames) {
		return fmt.Errorf("server_name %v, proxy_pass %v, balancer %v; model routes %v", names, passes, balancers, wantNames)
	}
	return sameRoutes(got, wantRoutes)
}

func checkHAProxy(t testing.TB, out []byte, want expectation) error {
	fixedLines(t)
	if err := checkComments(out, want, haproxyFixed, haproxyUseRe, haproxyBackRe, haproxyServerRe); err != nil {
		return err
	}
	var got []route
	var uses []string
	for _, l := range strings.Split(string(out), "\n") {
		if m := haproxyBackRe.FindStringSubmatch(l); m != nil {
			got = append(got, route{name: m[1]})
		} else if m := haproxyServerRe.FindStringSubmatch(l); m != nil && len(got) > 0 {
			got[len(got)-1].servers = append(got[len(got)-1].servers, m[1])
		} else if m := haproxyUseRe.FindStringSubmatch(l); m != nil {
			if m[2] != strings.ToLower(m[1]) {
				return fmt.Errorf("use_backend svc_%s matches host %s", m[1], m[2])
			}
			uses = append(uses, m[1])
		}
	}
	var wantNames []string
	for _, r := range want.routes {
		wantNames = append(wantNames, r.name)
	}
	if !slices.Equal(uses, wantNames) {
		return fmt.Errorf("use_backend %v; model routes %v", uses, wantNames)
	}
	return sameRoutes(got, want.routes)
}

func sameRoutes(got, want []route) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d routes, model %d:\ngot  %v\nwant %v", len(got), len(want), got, want)
	}
	for i := range got {
		if got[i].name != want[i].name || !slices.Equal(got[i].servers, want[i].servers) {
			return fmt.Errorf("route %d: got %v, model %v", i, got[i], want[i])
		}
	}
	return nil
}

// describe prints c for a failure message, one instance a line, in
// FuzzCatalog's input format: paste it into a seed file to replay.
func describe(c catalog) string {
	var b strings.Builder
	for _, s := range c {
		if len(s.instances) == 0 {
			fmt.Fprintf(&b, "%q\n", s.name)
		}
		for _, in := range s.instances {
			fmt.Fprintf(&b, "%q|%q|%q|%d|%q\n", s.name, in.ID, in.Address, in.Port, in.NodeAddress)
		}
	}
	return b.String()
}

// parseCatalog reads FuzzCatalog's text format (see there). Services come
// out in Consul's order: sorted by name, byte-wise.
func parseCatalog(text string) catalog {
	byName := map[string]*catService{}
	for n, line := range strings.Split(text, "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "|")
		field := func(i int) string {
			if i >= len(f) {
				return ""
			}
			if u, err := strconv.Unquote(f[i]); err == nil {
				return u
			}
			return f[i]
		}
		name := field(0)
		s := byName[name]
		if s == nil {
			s = &catService{name: name, instances: []*dep.HealthService{}}
			byName[name] = s
		}
		if len(f) == 1 {
			continue
		}
		port, _ := strconv.ParseInt(field(3), 10, 64)
		in := &dep.HealthService{
			Node: "node1", ID: field(1), Name: name, Status: "passing",
			Address: field(2), Port: int(port), NodeAddress: field(4),
		}
		if in.ID == "" {
			in.ID = fmt.Sprintf("line-%d", n+1)
		}
		if tags := field(5); tags != "" {
			in.Tags = strings.Split(tags, ",")
			s.tags = append(s.tags, in.Tags...)
		}
		if meta := field(6); meta != "" {
			in.ServiceMeta = map[string]string{}
			for _, kv := range strings.Split(meta, ",") {
				k, v, _ := strings.Cut(kv, "=")
				in.ServiceMeta[k] = v
			}
		}
		s.instances = append(s.instances, in)
	}
	var c catalog
	for _, s := range byName {
		c = append(c, *s)
	}
	slices.SortFunc(c, func(a, b catService) int { return strings.Compare(a.name, b.name) })
	return c
}

// The generator. Every pool mixes the ordinary with issue 10's cases, so a
// catalog usually has routable services next to the bad ones.
var (
	plainNames = []string{"web", "api", "db", "cache", "auth", "svc-1", "svc_2", "a", "0", "x9", "web-", "Web2", "search"}
	oddNames   = []string{
		"", "a b", "tag.name", "web.v2", ".", "a..b", ".web", "web.", "wéb", "сервис", "日本", "web\u200b", "🙂",
		"x;y", "x}", "{x", "x\ny", "x\"y", "x'y", "$host", "${x}", "#c", `\`, "evil;include /etc/passwd",
		"evil}\nserver {", "\x00", "-lead", "_lead", "a/b", "a|b", "a@dc1", "a~near", "{{inject}}", "\xff\xfe",
		"consul", "Consul", "x\r\ny", "\u2028", "web\n    include /etc/passwd;", "a:b", "a=b", "a,b",
	}
	hostile = []string{
		"", "\"", "'", "{", "}", ";", "\n", "\r\n", "#", "$host", "${x}", "\\", "\x00", "\x7f", "a b", "}\nserver {",
		"; include /etc/passwd;", "\"; return 200 \"", "' or '", "ünïcødé", "🙂", "\u2028", "\xff", "%s%d", "{{ . }}",
		"backup", "disabled", "10.0.0.1:80", strings.Repeat("x", 300), strings.Repeat("\U000f0000", 100),
	}
	validV4   = []string{"0.0.0.0", "255.255.255.255", "127.0.0.1", "10.0.0.1", "192.168.1.200"}
	invalidV4 = []string{
		"256.0.0.1", "1.2.3", "010.0.0.1", "1.2.3.4.5", " 10.0.0.1", "10.0.0.1 ", "1.2.3.4:80", "-1.2.3.4",
		"10.0.0.2;\n    include /etc/passwd;#", "1.2.3.4 backup", "1.2.3.04", "0x7f.0.0.1", "1.2.3.4/24", "１.2.3.4",
	}
	hostnames = []string{"localhost", "db.internal", "example.com", "a-b.c", "web", "host_name", "xn--wb-cja.example"}
	odds      = []int{0, -1, 1, 65535, 65536, 99999, -65536, math.MaxInt32, math.MinInt32, 1 << 40}
)

func pick[T any](r *rand.Rand, s []T) T { return s[r.Intn(len(s))] }

func randString(r *rand.Rand, alphabet string, n int) string {
	runes := []rune(alphabet)
	b := make([]rune, n)
	for i := range b {
		b[i] = runes[r.Intn(len(runes))]
	}
	return string(b)
}

func randBytes(r *rand.Rand, n int) string {
	b := make([]byte, n)
	r.Read(b)
	return string(b)
}

func randomCase(r *rand.Rand, s string) string {
	b := []byte(s)
	for i, c := range b {
		if r.Intn(2) == 0 {
			b[i] = byte(strings.ToUpper(string(c))[0])
		}
	}
	return string(b)
}

func genName(r *rand.Rand) string {
	switch r.Intn(12) {
	case 0, 1, 2, 3, 4:
		return pick(r, plainNames)
	case 5, 6:
		return randomCase(r, pick(r, plainNames))
	case 7:
		return pick(r, oddNames)
	case 8:
		n := pick(r, []int{62, 63, 64, 100, 200, 255, 300})
		if r.Intn(2) == 0 {
			return "s" + randString(r, "abcdefghijklmnopqrstuvwxyz0123456789-_", n-1)
		}
		return randString(r, "aé日🙂-.", n)
	case 9:
		return randString(r, "abcABC019_-.", 1+r.Intn(12))
	case 10:
		return pick(r, plainNames) + pick(r, []string{"-", "_", ".", "", "-2", "_2"}) + pick(r, []string{"", "v2", "V2"})
	default:
		return randBytes(r, 1+r.Intn(16))
	}
}

func genID(r *rand.Rand, name string, i int) string {
	switch r.Intn(6) {
	case 0:
		return pick(r, hostile)
	case 1:
		return randBytes(r, 1+r.Intn(40))
	default:
		return fmt.Sprintf("node%d:%s:%d", r.Intn(3), name, i)
	}
}

// genIPv6 writes a valid IPv6 address in one of its many text forms:
// groups with or without leading zeros in either case, an IPv4 tail,
// and a run of zero groups written "::".
func genIPv6(r *rand.Rand) string {
	groups := make([]string, 8)
	for i := range groups {
		v := r.Intn(0x10000)
		if r.Intn(3) == 0 {
			v = 0
		}
		g := strconv.FormatUint(uint64(v), 16)
		if r.Intn(4) == 0 {
			g = strings.Repeat("0", 4-len(g)) + g
		}
		if r.Intn(3) == 0 {
			g = strings.ToUpper(g)
		}
		groups[i] = g
	}
	hex := 8
	var tail string
	if r.Intn(5) == 0 { // IPv4 tail: ::ffff:a.b.c.d and the like
		hex = 6
		tail = fmt.Sprintf("%d.%d.%d.%d", r.Intn(256), r.Intn(256), r.Intn(256), r.Intn(256))
	}
	parts := groups[:hex]
	if r.Intn(3) > 0 { // compress a run
		start := r.Intn(hex)
		end := start + 1 + r.Intn(hex-start)
		head := strings.Join(parts[:start], ":")
		rest := strings.Join(parts[end:], ":")
		if tail != "" {
			if rest != "" {
				rest += ":"
			}
			rest += tail
		}
		return head + "::" + rest
	}
	s := strings.Join(parts, ":")
	if tail != "" {
		s += ":" + tail
	}
	return s
}

func genInvalidIPv6(r *rand.Rand) string {
	v := genIPv6(r)
	switch r.Intn(8) {
	case 0:
		return v + "%eth0"
	case 1:
		return "[" + v + "]"
	case 2:
		return v + ":1:2:3:4:5:6:7:8"
	case 3:
		return strings.Replace(v, ":", ":12345:", 1)
	case 4:
		return "1::2::3"
	case 5:
		return v + ":"
	case 6:
		return strings.Replace(v, ":", "g:", 1)
	default:
		return pick(r, []string{":::", "1:2:3:4:5:6:7:8:9", "::ffff:256.1.1.1", "::1.2.3", "fd00::1/64", "fd00::1 backup", "fd00::1]:80"})
	}
}

func genAddr(r *rand.Rand) string {
	switch r.Intn(14) {
	case 0, 1, 2, 3:
		return fmt.Sprintf("10.0.%d.%d", r.Intn(2), 1+r.Intn(6)) // small space: duplicates happen
	case 4:
		return pick(r, validV4)
	case 5:
		return pick(r, invalidV4)
	case 6, 7:
		return genIPv6(r)
	case 8:
		return genInvalidIPv6(r)
	case 9:
		return pick(r, hostnames)
	case 10, 11:
		return "" // the node's address is used
	case 12:
		return pick(r, hostile)
	default:
		return randBytes(r, 1+r.Intn(20))
	}
}

func genPort(r *rand.Rand) int {
	if r.Intn(5) == 0 {
		return pick(r, odds)
	}
	return 1 + r.Intn(65535)
}

func genTags(r *rand.Rand) []string {
	n := r.Intn(4)
	if r.Intn(15) == 0 {
		n = 100 + r.Intn(300)
	}
	tags := make([]string, n)
	for i := range tags {
		if r.Intn(2) == 0 {
			tags[i] = pick(r, hostile)
		} else {
			tags[i] = randBytes(r, r.Intn(30))
		}
	}
	return tags
}

func genMeta(r *rand.Rand) map[string]string {
	m := map[string]string{}
	for range r.Intn(6) {
		m[pick(r, hostile)] = pick(r, hostile) + randBytes(r, r.Intn(10))
	}
	return m
}

// genCatalog draws one catalog: usually up to 25 services of up to 6
// instances, sometimes a service of 60 instances or a catalog of 300
// services.
func genCatalog(r *rand.Rand) catalog {
	nServices := 1 + r.Intn(25)
	if r.Intn(40) == 0 {
		nServices = 300
	}
	byName := map[string]bool{}
	var c catalog
	for range nServices {
		name := genName(r)
		if byName[name] {
			continue // the catalog is keyed by name
		}
		byName[name] = true
		s := catService{name: name, tags: genTags(r), instances: []*dep.HealthService{}}
		n := r.Intn(7)
		if r.Intn(30) == 0 {
			n = 60
		}
		for i := range n {
			in := &dep.HealthService{
				Node: fmt.Sprintf("node%d", r.Intn(3)), ID: genID(r, name, i), Name: name, Status: "passing",
				Address: genAddr(r), Port: genPort(r), NodeAddress: pick(r, []string{"10.1.0.1", "10.1.0.2", "fd01::1", ""}),
				Tags: genTags(r), ServiceMeta: genMeta(r),
			}
			if r.Intn(6) == 0 {
				in.NodeAddress = genAddr(r)
			}
			if i > 0 && r.Intn(5) == 0 { // the same address:port again
				prev := s.instances[r.Intn(i)]
				in.Address, in.Port, in.NodeAddress = prev.Address, prev.Port, prev.NodeAddress
				if r.Intn(2) == 0 {
					in.Address = strings.ToUpper(in.Address)
				}
			}
			s.instances = append(s.instances, in)
		}
		c = append(c, s)
	}
	slices.SortFunc(c, func(a, b catService) int { return strings.Compare(a.name, b.name) })
	return c
}

// TestCatalogGeneratorCoverage keeps the generator honest: over the
// seeds TestCatalogFuzz uses, every case of issue 10 shows up.
func TestCatalogGeneratorCoverage(t *testing.T) {
	seen := map[string]int{}
	for seed := 1; seed <= *catalogs; seed++ {
		c := genCatalog(rand.New(rand.NewSource(int64(seed))))
		lower := map[string]int{}
		for _, s := range c {
			lower[strings.ToLower(s.name)]++
			switch {
			case strings.Contains(s.name, "."):
				seen["dotted name"]++
			case len(s.name) > 200:
				seen["200+ name"]++
			case strings.ContainsFunc(s.name, func(r rune) bool { return r > 127 }):
				seen["unicode name"]++
			case strings.ContainsAny(s.name, "{};\"\n"):
				seen["syntax in name"]++
			}
			if len(s.tags) >= 100 {
				seen["hundreds of tags"]++
			}
			hostports := map[string]bool{}
			for _, in := range s.instances {
				switch a, err := netip.ParseAddr(in.Address); {
				case in.Address == "":
					seen["empty address"]++
				case err == nil && a.Is6() && a.Zone() == "":
					seen["IPv6"]++
				case slices.Contains(hostnames, in.Address):
					seen["host name"]++
				}
				if in.Port == 0 {
					seen["port 0"]++
				}
				if in.Port > 65535 || in.Port < 0 {
					seen["port out of range"]++
				}
				hp := in.Address + "|" + strconv.Itoa(in.Port)
				if hostports[hp] {
					seen["same address:port"]++
				}
				hostports[hp] = true
				for k, v := range in.ServiceMeta {
					if strings.ContainsAny(k+v, "{};\"\n") {
						seen["syntax in meta"]++
					}
				}
				for _, tag := range in.Tags {
					if strings.ContainsAny(tag, "{};\"\n") {
						seen["syntax in tags"]++
					}
				}
			}
		}
		for _, n := range lower {
			if n > 1 {
				seen["names equal but for case"]++
			}
		}
	}
	for _, k := range []string{
		"dotted name", "200+ name", "unicode name", "syntax in name", "hundreds of tags", "empty address", "IPv6",
		"host name", "port 0", "port out of range", "same address:port", "syntax in meta", "syntax in tags",
		"names equal but for case",
	} {
		if seen[k] == 0 {
			t.Errorf("no %s in %d catalogs", k, *catalogs)
		}
	}
	t.Logf("cases over %d catalogs: %v", *catalogs, seen)
}
