package templates_test

// The catalog fuzz test of issue 10: whatever the catalog holds, the
// shipped templates render a config the real nginx and HAProxy accept,
// route exactly what a Go model of the rules says can be routed, inject
// nothing, and count every "# skipped" line in the "# switchyard:" summary.

import (
	"encoding/json"
	"flag"
	"fmt"
	"maps"
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
					r := rand.New(rand.NewSource(int64(seed)))
					checkCatalog(t, p, genCatalog(r), genTagFilter(r))
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
// are comma-separated (or a JSON list), meta k=v pairs comma-separated (or
// a JSON object, for values with commas: route_host lists); a line with
// only a service name is a service without a passing instance; a line
// "@tag T" sets SWITCHYARD_ROUTE_TAG. Seeds:
// testdata/fuzz/FuzzCatalog (run by a plain go test); fuzz with
// go test ./templates -run '^$' -fuzz FuzzCatalog.
func FuzzCatalog(f *testing.F) {
	p := proxies(f)
	f.Fuzz(func(t *testing.T, text string) {
		if len(text) > 1<<16 {
			t.Skip("larger than 64 KiB")
		}
		c, tag := parseCatalog(text)
		checkCatalog(t, p, c, tag)
	})
}

type proxyBins struct{ nginx, haproxy string }

func proxies(t testing.TB) proxyBins {
	return proxyBins{nginx: testenv.NginxBinary(t), haproxy: testenv.HAProxyBinary(t)}
}

// checkCatalog renders c through both templates and checks each render
// against the model, then has the real proxy check it. tag is
// SWITCHYARD_ROUTE_TAG ("": every service).
func checkCatalog(t testing.TB, p proxyBins, c catalog, tag string) {
	t.Helper()
	env := append(slices.Clone(contractEnv), "SWITCHYARD_ROUTE_TAG="+tag)
	n := renderCatalog(t, "nginx.conf.tmpl", c, env)
	h := renderCatalog(t, "haproxy.cfg.tmpl", c, env)
	if t.Failed() {
		return
	}
	fail := func(proxy string, out []byte, err error) {
		t.Helper()
		t.Fatalf("%s: %v\ncatalog (tag %q):\n%s\nrendered:\n%s", proxy, err, tag, describe(c), out)
	}
	want := model(c, proxyRules{tcp: true, reserved: []string{fuzzPort}, tag: tag})
	if err := checkNginx(t, n, want); err != nil {
		fail("nginx", n, err)
	}
	if err := checkHAProxy(t, h, want); err != nil {
		fail("haproxy", h, err)
	}
	nginxAccepts(t, p.nginx, n)
	haproxyAccepts(t, p.haproxy, h)
}

// fuzzPort is fuzzListen's port: no TCP route may take it.
var fuzzPort = strings.Split(fuzzListen, ":")[1]

// The lines of the nginx template besides the skeleton (the render of an
// empty catalog) and comments.
var (
	nginxUpstreamRe = regexp.MustCompile(`^    upstream svc_` + name + ` \{$`)
	nginxServerRe   = regexp.MustCompile(`^        server (\S+?)(?: weight=(\d+))? max_fails=1 fail_timeout=5s;$`)
	nginxLuaRe      = regexp.MustCompile(`^        balancer_by_lua_block \{ switchyard\.balance\("svc_` + name + `"\) \}$`)
	nginxListenRe   = regexp.MustCompile(`^        listen (127\.0\.0\.1:18080|127\.0\.0\.1:18081 http2|127\.0\.0\.1:(\d+));$`)
	nginxNameRe     = regexp.MustCompile(`^        server_name ` + host + `;$`)
	nginxLocRe      = regexp.MustCompile(`^        location (= )?` + path + ` \{$`)
	nginxPassRe     = regexp.MustCompile(`^            (proxy_pass http|grpc_pass grpc)://svc_` + name + `(/?);$`)
	nginxStreamRe   = regexp.MustCompile(`^        proxy_pass svc_` + name + `;$`)
	nginxNoteRe     = regexp.MustCompile(`^    # (route_sticky): nginx OSS has no cookie stickiness \(HAProxy and Caddy have it\)$|^    # (route_health) ` + path + `: nginx OSS has no active checks; max_fails and fail_timeout below are passive$`)
	nginxBlock      = []string{"        keepalive 16;", "    }", "    server {", "        }", "            return 404;", "stream {", "}",
		"load_module /usr/lib/nginx/modules/ngx_stream_module.so;", "# route_proto tcp: a listener per route_port. nginx's stream module has",
		"# no Lua balancer here: a change of these members reloads.", `            if ($http_x_forwarded_proto != "https") {`,
		"                return 308 https://$host$request_uri;", "            }", "            proxy_set_header Upgrade $http_upgrade;",
		"            proxy_set_header Connection $switchyard_upgrade;", "            proxy_set_header Host $host;",
		"            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;", "            proxy_set_header X-Forwarded-Proto $scheme;",
		"            proxy_read_timeout 1h;", "            proxy_send_timeout 1h;"}
	haproxyBlock = []string{"    balance roundrobin", "    mode tcp", "    option tcplog", "    # route_sticky: each server's cookie is a hash of its address (never",
		"    # the address itself). HAProxy 2.6 gives a server added through the", "    # runtime API no cookie, so \"add server\" refuses the keyword and a new",
		"    # instance of this service reloads.", "    http-request redirect scheme https code 308 if !{ req.hdr(x-forwarded-proto) -m str https }",
		"    timeout tunnel 1h"}
	skeletonOnce             sync.Once
	nginxFixed, haproxyFixed map[string]bool
)

func fixedLines(t testing.TB) {
	skeletonOnce.Do(func() {
		nginxFixed = lineSet(renderCatalog(t, "nginx.conf.tmpl", nil, contractEnv), nginxBlock)
		haproxyFixed = lineSet(renderCatalog(t, "haproxy.cfg.tmpl", nil, contractEnv), haproxyBlock)
	})
}

// nginxLoc is a location being read: its server block's kind and host,
// its path, and what its body says.
type nginxLoc struct {
	kind, host, path, pass string
	exact, https, ws       bool
	strip                  bool
}

// checkNginx reads an nginx render back into routes: upstreams (http and
// stream), and per server block and location the host, path and pass.
func checkNginx(t testing.TB, out []byte, want expectation) error {
	fixedLines(t)
	if err := checkComments(out, want, nginxFixed, nginxUpstreamRe, nginxServerRe, nginxLuaRe, nginxListenRe, nginxNameRe, nginxLocRe, nginxPassRe, nginxStreamRe, nginxNoteRe); err != nil {
		return err
	}
	got := reading{routes: map[string]*route{}}
	var cur *route
	var stream, sticky bool
	var health, kind, hostName, port string
	var loc *nginxLoc
	locs := map[nginxLoc]int{}
	roots := map[string]bool{} // server blocks with a location / or a 404
	for _, l := range strings.Split(string(out), "\n") {
		switch m := []any{nil}; {
		case l == "stream {":
			stream = true
		case match(nginxNoteRe, l, &m):
			if m[1] != "" {
				sticky = true
			} else {
				health = m[3].(string)
			}
		case match(nginxUpstreamRe, l, &m):
			cur = got.pool(m[1].(string))
			cur.proto, cur.sticky, cur.health = "http", sticky, health
			if stream {
				cur.proto = "tcp"
			}
			sticky, health = false, ""
		case match(nginxServerRe, l, &m) && cur != nil:
			cur.servers = append(cur.servers, haproxyServerName(m[1].(string))+" "+m[1].(string))
			cur.weights = append(cur.weights, m[2].(string))
		case match(nginxListenRe, l, &m):
			kind, port = "http", m[2].(string)
			if strings.HasSuffix(l, "http2;") {
				kind = "grpc"
			}
		case match(nginxNameRe, l, &m):
			hostName = m[1].(string)
		case match(nginxStreamRe, l, &m):
			got.pool(m[1].(string)).port = port
		case match(nginxLocRe, l, &m):
			loc = &nginxLoc{kind: kind, host: hostName, path: m[2].(string), exact: m[1] != ""}
			if !loc.exact && loc.path != "/" {
				loc.path = strings.TrimSuffix(loc.path, "/")
			}
		case loc != nil && match(nginxPassRe, l, &m):
			loc.pass, loc.strip = m[2].(string), m[3] == "/"
			if (m[1] == "grpc_pass grpc") != (kind == "grpc") {
				return fmt.Errorf("%q in a %s server", l, kind)
			}
		case loc != nil && l == `            if ($http_x_forwarded_proto != "https") {`:
			loc.https = true
		case loc != nil && l == "            proxy_set_header Upgrade $http_upgrade;":
			loc.ws = true
		case loc != nil && l == "            return 404;":
			roots[kind+" "+hostName] = true
			loc = nil
		case loc != nil && l == "        }":
			if loc.path == "/" {
				roots[kind+" "+hostName] = true
			}
			locs[*loc]++
			loc = nil
		}
	}
	return nginxRoutes(&got, locs, roots, want)
}

// match is FindStringSubmatch into m, as []any so a switch can use it.
func match(re *regexp.Regexp, l string, m *[]any) bool {
	s := re.FindStringSubmatch(l)
	*m = nil
	for _, v := range s {
		*m = append(*m, v)
	}
	return s != nil
}

// nginxRoutes turns the locations into hosts and per-route settings: a
// path other than / has a prefix and an exact location, alike.
func nginxRoutes(got *reading, locs map[nginxLoc]int, roots map[string]bool, want expectation) error {
	for l, n := range locs {
		if l.exact {
			continue
		}
		if l.path != "/" {
			ex := l
			ex.exact = true
			if n != 1 || locs[ex] != 1 {
				return fmt.Errorf("location %+v: %d prefix and %d exact locations", l, n, locs[ex])
			}
		}
		r := got.routes[l.pass]
		if r == nil {
			return fmt.Errorf("location %+v passes to no upstream", l)
		}
		got.hosts = append(got.hosts, hostRoute{l.kind, l.host, l.path, l.pass})
		if l.kind == "grpc" {
			r.proto = "grpc"
		} else if l.ws {
			r.proto = "ws"
		}
		r.strip, r.https = l.strip, l.https
	}
	for _, h := range got.hosts {
		if !roots[h.kind+" "+h.host] {
			return fmt.Errorf("server %s %s has no location /", h.kind, h.host)
		}
	}
	// nginx notes route_health for gRPC too (it probes nothing anyway).
	return compare(*got, want, false, func(r route) route {
		e := effective(r)
		if r.proto == "grpc" {
			e.health = r.health
		}
		return e
	})
}

var (
	haproxyUseRe    = regexp.MustCompile(`^    use_backend svc_` + name + ` if (.+)$`)
	haproxyHostRe   = `(\{ var\(txn\.host\) -m str [a-z0-9.-]+ \}|\{ var\(txn\.host\) -m end \.[a-z0-9.-]+ \}|\{ var\(txn\.service\) -m str ` + lname + ` \})( \{ req\.hdr\(content-type\) -m beg application/grpc \})?`
	haproxyCondRe   = regexp.MustCompile(`^` + haproxyHostRe + `$`)
	haproxyPathRe   = regexp.MustCompile(`^` + haproxyHostRe + ` \{ path ` + path + ` \} or ` + haproxyHostRe + ` \{ path_beg ` + path + `/ \}$`)
	haproxyBackRe   = regexp.MustCompile(`^(backend|listen) svc_` + name + `$`)
	haproxyServerRe = regexp.MustCompile(`^    server ([0-9a-f.:_]+) (\S+)(?: weight (\d+))?( proto h2)?( cookie [0-9a-f]{16})? check inter 2s fall 1 rise 1$`)
	haproxyBindRe   = regexp.MustCompile(`^    bind 127\.0\.0\.1:(\d+)$`)
	haproxyCookieRe = regexp.MustCompile(`^    cookie sy_` + lname + ` insert indirect nocache$`)
	haproxyCheckRe  = regexp.MustCompile(`^    option httpchk GET ` + path + `$`)
	haproxyStripRe  = regexp.MustCompile(`^    http-request replace-path \^(/[A-Za-z0-9_~/\[\].-]*)/\?\(\.\*\)\$ /\\1$`)
)

// haproxyHost is the model's host of a use_backend host condition.
func haproxyHost(cond string) string {
	f := strings.Fields(cond)
	switch {
	case f[1] == "var(txn.service)":
		return f[4] + ".*"
	case f[3] == "end":
		return "*" + f[4]
	}
	return f[4]
}

// checkHAProxy reads an HAProxy render back into routes: the use_backend
// lines in order, and each backend (or TCP listen section) with its
// settings and servers.
func checkHAProxy(t testing.TB, out []byte, want expectation) error {
	fixedLines(t)
	if err := checkComments(out, want, haproxyFixed, haproxyUseRe, haproxyBackRe, haproxyServerRe, haproxyBindRe, haproxyCookieRe, haproxyCheckRe, haproxyStripRe); err != nil {
		return err
	}
	got := reading{routes: map[string]*route{}}
	var cur *route
	h2 := map[string][]bool{}      // per backend: which servers have proto h2
	cookies := map[string][]bool{} // and which have a cookie
	for _, l := range strings.Split(string(out), "\n") {
		switch m := []any{nil}; {
		case match(haproxyUseRe, l, &m):
			hr, err := haproxyUse(m[1].(string), m[2].(string))
			if err != nil {
				return err
			}
			got.hosts = append(got.hosts, hr)
		case match(haproxyBackRe, l, &m):
			cur = got.pool(m[2].(string))
			cur.proto = "http"
		case cur == nil:
		case match(haproxyServerRe, l, &m):
			if m[1] != haproxyServerName(m[2].(string)) {
				return fmt.Errorf("server %s is named %s", m[2], m[1])
			}
			cur.servers = append(cur.servers, m[1].(string)+" "+m[2].(string))
			cur.weights = append(cur.weights, m[3].(string))
			h2[cur.name] = append(h2[cur.name], m[4] != "")
			cookies[cur.name] = append(cookies[cur.name], m[5] != "")
		case l == "    mode tcp":
			cur.proto = "tcp"
		case match(haproxyBindRe, l, &m):
			cur.port = m[1].(string)
		case strings.HasPrefix(l, "    cookie sy_"):
			cur.sticky = true
		case match(haproxyCheckRe, l, &m):
			cur.health = m[1].(string)
		case strings.HasPrefix(l, "    http-request redirect "):
			cur.https = true
		case strings.HasPrefix(l, "    http-request replace-path "):
			cur.strip = true
		case l == "    timeout tunnel 1h":
			cur.proto = "ws"
		}
	}
	for _, hr := range got.hosts {
		r := got.routes[hr.service]
		if r == nil {
			return fmt.Errorf("use_backend svc_%s: no such backend", hr.service)
		}
		if hr.kind == "grpc" {
			r.proto = "grpc"
		}
	}
	for name, r := range got.routes {
		for i, f := range h2[name] {
			if f != (r.proto == "grpc") || cookies[name][i] != r.sticky {
				return fmt.Errorf("backend svc_%s (%s, sticky %v): server %d has proto h2 %v, a cookie %v", name, r.proto, r.sticky, i, f, cookies[name][i])
			}
		}
	}
	return compare(got, want, true, effective)
}

// haproxyUse reads the condition of a use_backend line.
func haproxyUse(svc, cond string) (hostRoute, error) {
	if m := haproxyCondRe.FindStringSubmatch(cond); m != nil {
		return hostRoute{haproxyKind(m[3]), haproxyHost(m[1]), "/", svc}, nil
	}
	m := haproxyPathRe.FindStringSubmatch(cond)
	if m == nil || m[1] != m[5] || m[3] != m[7] || m[4] != m[8] || m[4] == "/" {
		return hostRoute{}, fmt.Errorf("use_backend svc_%s: condition %q", svc, cond)
	}
	return hostRoute{haproxyKind(m[3]), haproxyHost(m[1]), m[4], svc}, nil
}

func haproxyKind(grpcCond string) string {
	if grpcCond != "" {
		return "grpc"
	}
	return "http"
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
			tags, _ := json.Marshal(append([]string{}, in.Tags...))
			meta, _ := json.Marshal(in.ServiceMeta)
			fmt.Fprintf(&b, "%q|%q|%q|%d|%q|%q|%q\n", s.name, in.ID, in.Address, in.Port, in.NodeAddress, tags, meta)
		}
	}
	return b.String()
}

// parseCatalog reads FuzzCatalog's text format (see there). Services come
// out in Consul's order: sorted by name, byte-wise.
func parseCatalog(text string) (catalog, string) {
	byName := map[string]*catService{}
	var tag string
	for n, line := range strings.Split(text, "\n") {
		if t, ok := strings.CutPrefix(line, "@tag "); ok {
			tag = t
			continue
		}
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
		if tags := field(5); strings.HasPrefix(tags, "[") {
			_ = json.Unmarshal([]byte(tags), &in.Tags)
			s.tags = append(s.tags, in.Tags...)
		} else if tags != "" {
			in.Tags = strings.Split(tags, ",")
			s.tags = append(s.tags, in.Tags...)
		}
		if meta := field(6); strings.HasPrefix(meta, "{") {
			_ = json.Unmarshal([]byte(meta), &in.ServiceMeta)
		} else if meta != "" {
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
	return c, tag
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
		if r.Intn(3) == 0 {
			tags[i] = "public" // SWITCHYARD_ROUTE_TAG of some catalogs
		} else if r.Intn(2) == 0 {
			tags[i] = pick(r, hostile)
		} else {
			tags[i] = randBytes(r, r.Intn(30))
		}
	}
	return tags
}

// routeValues are the route_* meta values the generator draws from:
// valid ones (often shared, so services meet on one host, path or TCP
// port) next to hostile ones; hostile values are drawn too.
var routeValues = map[string][]string{
	"route_host": {"api.example.com", "*.example.com", "Web.Example.COM", "shared.example.com", "a.b",
		"api.example.com,www.example.com", " spaced.example.com , shared.example.com", "*.*.x", "a..b", "-a.com",
		strings.Repeat("a", 64) + ".com", strings.Repeat("abcdefghij.", 25) + "com", "日本.jp", "exa mple.com",
		"a.com;b", "a.com,,b.com", "x.com}\nserver {", "\u212a.example.com", strings.Repeat("h.example.com,", 30) + "z.com",
		// The longest valid host name (253 bytes), and forty hosts at once.
		strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61),
		strings.Join(slices.Collect(func(yield func(string) bool) {
			for i := range 40 {
				if !yield(fmt.Sprintf("h%d.example.net", i)) {
					return
				}
			}
		}), ",")},
	"route_path": {"/", "/api", "/api/", "/api/v1", "/v1.0/x", "/users", "/a_b~c-d", "api", "//", "/a//b", "/../x",
		"/./", "/a b", "/a;b", "/{x}", "/a\n", "/" + strings.Repeat("a", 200), "/日本"},
	"route_strip":  {"true", "false", "yes", "TRUE", "1"},
	"route_proto":  {"http", "ws", "grpc", "tcp", "tcp", "udp", "HTTP", "h2"},
	"route_port":   {"15000", "15001", "15001", fuzzPort, "0", "65535", "65536", "080", "-1", "1e3"},
	"route_weight": {"1", "3", "256", "257", "0", "-1", "01", "1.5"},
	"route_health": {"/healthz", "/", "/status/ready", "healthz", "/a b", "/h\"", "/../x"},
	"route_sticky": {"true", "false", "on"},
	"route_https":  {"redirect", "Redirect", "true", ""},
}

var routeKeys = slices.Sorted(maps.Keys(routeValues))

func genMeta(r *rand.Rand) map[string]string {
	m := map[string]string{}
	for range r.Intn(6) {
		m[pick(r, hostile)] = pick(r, hostile) + randBytes(r, r.Intn(10))
	}
	for range r.Intn(5) {
		k := pick(r, routeKeys)
		if r.Intn(5) == 0 {
			m[k] = pick(r, hostile)
		} else {
			m[k] = pick(r, routeValues[k])
		}
	}
	return m
}

// genServiceMeta draws the route_* keys all instances of a service
// share, as a registrar writes them from one image's labels: often a TCP
// route or a path on a shared host, so ports and paths meet.
func genServiceMeta(r *rand.Rand) map[string]string {
	switch r.Intn(6) {
	case 0:
		return map[string]string{"route_proto": "tcp", "route_port": pick(r, routeValues["route_port"][:4])}
	case 1, 2:
		return map[string]string{"route_host": pick(r, []string{"shared.example.com", "api.example.com", "*.example.com"}),
			"route_path": pick(r, routeValues["route_path"][:7]), "route_strip": pick(r, []string{"true", "false"})}
	}
	return nil
}

// genTagFilter draws SWITCHYARD_ROUTE_TAG: usually none.
func genTagFilter(r *rand.Rand) string {
	if r.Intn(5) == 0 {
		return "public"
	}
	return ""
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
		shared := genServiceMeta(r)
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
			for _, k := range slices.Sorted(maps.Keys(shared)) { // sorted: a seed draws one catalog
				if _, ok := in.ServiceMeta[k]; !ok || r.Intn(2) == 0 {
					in.ServiceMeta[k] = shared[k]
				}
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
			s.tags = append(s.tags, in.Tags...) // Consul's service tags: the union of its instances'
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
		r := rand.New(rand.NewSource(int64(seed)))
		c := genCatalog(r)
		routeCases(seen, c, genTagFilter(r))
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
		"names equal but for case", "route value ignored", "host claimed twice", "TCP route", "TCP port taken", "gRPC route",
		"WebSocket route", "host with several paths", "strip", "https redirect", "sticky", "health", "weighted server",
		"wildcard host", "tag filter", "253-byte host",
	} {
		if seen[k] == 0 {
			t.Errorf("no %s in %d catalogs", k, *catalogs)
		}
	}
	t.Logf("cases over %d catalogs: %v", *catalogs, seen)
}

// routeCases counts, in the model's routes of c, the cases of the
// routing contract the generator must reach.
func routeCases(seen map[string]int, c catalog, tag string) {
	e := model(c, proxyRules{tcp: true, reserved: []string{fuzzPort}, tag: tag})
	lax := model(c, proxyRules{tcp: true, tag: tag})
	if len(lax.routes) > len(e.routes) || lax.skippedServices < e.skippedServices {
		seen["TCP port taken"]++
	}
	if tag != "" {
		seen["tag filter"]++
	}
	if e.ignore > 0 {
		seen["route value ignored"]++
	}
	paths := map[string]map[string]bool{}
	for _, h := range e.hosts {
		if paths[h.host] == nil {
			paths[h.host] = map[string]bool{}
		}
		paths[h.host][h.path] = true
		if strings.HasPrefix(h.host, "*.") {
			seen["wildcard host"]++
		}
		if len(h.host) == 253 {
			seen["253-byte host"]++
		}
	}
	for _, p := range paths {
		if len(p) > 1 {
			seen["host with several paths"]++
		}
	}
	for _, r := range e.routes {
		seen[map[string]string{"tcp": "TCP route", "grpc": "gRPC route", "ws": "WebSocket route", "http": "HTTP route"}[r.proto]]++
		for k, on := range map[string]bool{"strip": r.strip && r.path != "/", "https redirect": r.https, "sticky": r.sticky,
			"health": r.health != "", "weighted server": slices.ContainsFunc(r.weights, func(w string) bool { return w != "" })} {
			if on {
				seen[k]++
			}
		}
	}
	if e.conflicts > 0 {
		seen["host claimed twice"]++
	}
}
