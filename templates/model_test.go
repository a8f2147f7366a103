package templates_test

// The Go model of the shipped templates' rules (README "Shipped
// templates"): which services and instances are routed, which route_*
// meta values count, and where each route goes. net/netip decides what
// is an address, and Go's regexp the contract's value checks, so the
// templates' own checks are tested too.

import (
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// route is one routed service as the model expects it.
type route struct {
	name string
	// servers are "<HAProxy server name> <address:port>": the address:port
	// in lower case, IPv6 without brackets and "_" before the port, so a
	// server keeps its name while it exists.
	servers []string
	weights []string // per server: route_weight, "" for none
	proto   string   // http, ws, grpc or tcp
	port    string   // tcp: the listen port
	path    string   // route_path as routed: no trailing "/"
	strip   bool
	sticky  bool
	https   bool
	health  string
}

// hostRoute is one host and path routed to a service. host is the name
// rule "<name>.*" when the service asks for no host.
type hostRoute struct{ kind, host, path, service string }

type expectation struct {
	routes []route
	// hosts in the order HAProxy and Caddy try them: exact hosts, then
	// wildcards, then the name rule; longer hosts, then longer paths first.
	hosts                                     []hostRoute
	skippedServices, skippedInstances, ignore int
	noRouteLines                              int
	conflicts                                 int // hosts and paths an earlier service has
}

// proxyRules are what differs between the templates.
type proxyRules struct {
	tcp      bool     // TCP routes (Caddy's core has none)
	reserved []string // ports a TCP route cannot take
	tag      string   // SWITCHYARD_ROUTE_TAG
}

var (
	tokenRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)
	hostRe   = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	pathRe   = regexp.MustCompile(`^/([A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*/?)?$`)
	dotSegRe = regexp.MustCompile(`(^|/)\.\.?(/|$)`)
	portRe   = regexp.MustCompile(`^[1-9][0-9]{0,4}$`)
)

func haproxyServerName(server string) string {
	return strings.NewReplacer("[", "", "]:", "_").Replace(strings.ToLower(server))
}

func validPath(v string) bool {
	return len(v) <= 128 && pathRe.MatchString(v) && !dotSegRe.MatchString(v)
}

func validWeight(v string) bool {
	n, err := strconv.Atoi(v)
	return err == nil && n >= 1 && n <= 256 && strconv.Itoa(n) == v
}

// model is the templates' rules in Go.
func model(c catalog, p proxyRules) expectation {
	m := modeler{p: p, routed: map[string]bool{}, taken: map[string]bool{}, claimed: map[hostRoute]bool{}}
	for _, port := range p.reserved {
		m.taken[port] = true
	}
	for _, s := range c {
		m.service(s)
	}
	slices.SortStableFunc(m.e.hosts, func(a, b hostRoute) int { return strings.Compare(hostOrder(a), hostOrder(b)) })
	return m.e
}

// modeler walks a catalog in Consul's order, as a template does.
type modeler struct {
	p       proxyRules
	e       expectation
	routed  map[string]bool // lower-case names with a route
	taken   map[string]bool // TCP ports
	claimed map[hostRoute]bool
}

func (m *modeler) service(s catService) {
	if s.name == "consul" || (m.p.tag != "" && !slices.Contains(s.tags, m.p.tag)) {
		return
	}
	key := strings.ToLower(s.name)
	if len(s.name) > 63 || strings.Contains(s.name, ".") || !tokenRe.MatchString(s.name) || m.routed[key] {
		m.e.skippedServices++
		return
	}
	r, meta, hosts := m.instances(s)
	if len(r.servers) == 0 {
		m.e.noRouteLines++
		return
	}
	modelMeta(&r, meta, &m.e)
	switch {
	case r.proto != "tcp":
		if !m.http(r, hosts) {
			return
		}
	case !m.p.tcp:
		m.e.noRouteLines++
		return
	case r.port == "" || m.taken[r.port]:
		m.e.skippedServices++
		return
	default:
		m.taken[r.port] = true
	}
	m.routed[key] = true
	m.e.routes = append(m.e.routes, r)
}

// instances returns the service's routed servers, the meta of the first
// routed instance, and the hosts asked for (sorted), counting what it
// skips or ignores.
func (m *modeler) instances(s catService) (route, map[string]string, []string) {
	r := route{name: s.name, proto: "http", path: "/"}
	var meta map[string]string
	seen, hosts := map[string]bool{}, map[string]bool{}
	for _, in := range s.instances {
		if m.p.tag != "" && !slices.Contains(in.Tags, m.p.tag) {
			continue
		}
		server, ok := modelServer(in.Address, in.NodeAddress, in.Port)
		if !ok || seen[strings.ToLower(server)] {
			m.e.skippedInstances++
			continue
		}
		seen[strings.ToLower(server)] = true
		if meta == nil {
			meta = map[string]string{}
			maps.Copy(meta, in.ServiceMeta)
		}
		w := in.ServiceMeta["route_weight"]
		if w != "" && !validWeight(w) {
			m.e.ignore++
			w = ""
		}
		r.servers = append(r.servers, haproxyServerName(server)+" "+server)
		r.weights = append(r.weights, w)
		for _, h := range strings.Split(strings.TrimSpace(in.ServiceMeta["route_host"]), ",") {
			switch h = strings.ToLower(strings.TrimSpace(h)); {
			case h == "":
			case len(h) <= 253 && hostRe.MatchString(h):
				hosts[h] = true
			default:
				m.e.ignore++
			}
		}
	}
	return r, meta, slices.Sorted(maps.Keys(hosts))
}

// http claims the service's hosts (or its name rule) with its path; a
// host and path claimed already is ignored. It reports whether any is
// left.
func (m *modeler) http(r route, hosts []string) bool {
	kind := "http"
	if r.proto == "grpc" {
		kind = "grpc"
	}
	if len(hosts) == 0 {
		hosts = []string{strings.ToLower(r.name) + ".*"}
	}
	var mine []hostRoute
	for _, h := range hosts {
		probe := hostRoute{kind, h, r.path, ""}
		if m.claimed[probe] {
			m.e.ignore++
			m.e.conflicts++
			continue
		}
		m.claimed[probe] = true
		mine = append(mine, hostRoute{kind, h, r.path, r.name})
	}
	if len(mine) == 0 {
		m.e.noRouteLines++
	}
	m.e.hosts = append(m.e.hosts, mine...)
	return len(mine) > 0
}

// hostOrder is the sort key of the templates' route order.
func hostOrder(h hostRoute) string {
	class := 0
	if strings.HasSuffix(h.host, ".*") {
		class = 2
	} else if strings.HasPrefix(h.host, "*") {
		class = 1
	}
	return strconv.Itoa(class) + " " + strconv.Itoa(999-len(h.host)) + " " + strconv.Itoa(999-len(h.path)) + " " + h.host + " " + h.path + " " + h.kind
}

// modelServer is the address:port an instance is routed at, if any.
func modelServer(addr, node string, port int) (string, bool) {
	if addr == "" {
		addr = node
	}
	a, err := netip.ParseAddr(addr)
	server := addr
	if strings.Contains(addr, ":") {
		server = "[" + addr + "]"
	}
	server += ":" + strconv.Itoa(port)
	// nginx 1.22 cannot read seven groups and a trailing "::".
	nginxCannot := strings.HasSuffix(addr, "::") && strings.Count(addr, ":") == 8
	return server, err == nil && a.Zone() == "" && !nginxCannot && port >= 1 && port <= 65535
}

// modelMeta reads the service-wide route_* keys of the first routed
// instance into r, counting each bad one.
func modelMeta(r *route, meta map[string]string, e *expectation) {
	check := func(key string, ok func(string) bool) (string, bool) {
		v := meta[key]
		if v == "" {
			return "", false
		}
		if !ok(v) {
			e.ignore++
			return "", false
		}
		return v, true
	}
	oneOf := func(vals ...string) func(string) bool {
		return func(v string) bool { return slices.Contains(vals, v) }
	}
	if v, ok := check("route_path", validPath); ok {
		r.path = strings.TrimSuffix(v, "/")
		if r.path == "" {
			r.path = "/"
		}
	}
	v, _ := check("route_strip", oneOf("true", "false"))
	r.strip = v == "true"
	if v, ok := check("route_proto", oneOf("http", "ws", "grpc", "tcp")); ok {
		r.proto = v
	}
	r.port, _ = check("route_port", func(v string) bool { n, _ := strconv.Atoi(v); return portRe.MatchString(v) && n <= 65535 })
	r.health, _ = check("route_health", validPath)
	v, _ = check("route_sticky", oneOf("true", "false"))
	r.sticky = v == "true"
	v, _ = check("route_https", oneOf("redirect"))
	r.https = v == "redirect"
}
