package membership

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/nginxconf"
)

// NginxServer is a server of an upstream with the Switchyard Lua
// balancer: Server, plus the passive health settings the balancer
// applies as nginx's round robin does.
type NginxServer struct {
	Server
	MaxFails    int           // max_fails=, nginx's default 1; 0 never marks it failed
	FailTimeout time.Duration // fail_timeout=, nginx's default 10s
}

// NginxPool is an upstream whose servers changed: its complete new list
// and the running one, in config order.
type NginxPool struct {
	Name         string
	Servers, Old []NginxServer
}

// Nginx compares two renders of one nginx config file. The change is
// membership only when nothing but the server lines of dynamic upstreams
// differ (see NginxDiff); comments and white space never count.
func Nginx(old, new []byte) (Delta, error) {
	pools, err := NginxDiff(old, new)
	if err != nil {
		return Delta{}, err
	}
	var d Delta
	for _, p := range pools {
		d.Pools = append(d.Pools, Pool{Name: p.Name, Servers: nginxPlain(p.Servers), Old: nginxPlain(p.Old)})
	}
	return d, nil
}

func nginxPlain(ss []NginxServer) []Server {
	out := make([]Server, len(ss))
	for i, s := range ss {
		out[i] = s.Server
	}
	return out
}

// NginxDiff is Nginx with the servers as the Lua balancer takes them. A
// dynamic upstream is an http upstream NAME block holding
//
//	balancer_by_lua_block { switchyard.balance("NAME") }
//
// (the contract of the shipped template; other Lua balancers are the
// operator's own, and reload). The two files must be the same directive
// for directive, Lua blocks byte for byte, once the server lines of the
// dynamic upstreams are set aside; any other difference is Structural.
// Each dynamic upstream whose server lines differ is a pool, and each of
// its servers must be one the balancer can take: a literal IP address and
// only weight=, max_fails=, fail_timeout= and down (backup, max_conns and
// the rest need nginx's own balancer: Structural).
func NginxDiff(old, new []byte) ([]NginxPool, error) {
	oldSk, ou := nginxSkeleton(nginxconf.Parse(old))
	newSk, nu := nginxSkeleton(nginxconf.Parse(new))
	for i := range max(len(oldSk), len(newSk)) {
		if i >= len(oldSk) || i >= len(newSk) || oldSk[i] != newSk[i] {
			return nil, structural("nginx: %s", nginxFirstDiff(oldSk, newSk, i))
		}
	}
	var pools []NginxPool
	for _, name := range nu.order {
		if nginxSameLines(ou.servers[name], nu.servers[name]) {
			continue
		}
		p := NginxPool{Name: name}
		var err error
		if p.Old, err = nginxServers(name, ou.servers[name]); err != nil {
			return nil, err
		}
		if p.Servers, err = nginxServers(name, nu.servers[name]); err != nil {
			return nil, err
		}
		pools = append(pools, p)
	}
	return pools, nil
}

// nginxUpstreams are the server lines of a file's dynamic upstreams.
type nginxUpstreams struct {
	order   []string
	servers map[string][]*nginxconf.Node
}

// nginxSkeleton flattens a file to one line per directive (depth, words,
// Lua source), leaving out the server lines of dynamic upstreams, which
// it returns apart.
func nginxSkeleton(nodes []*nginxconf.Node) ([]string, nginxUpstreams) {
	ups := nginxUpstreams{servers: map[string][]*nginxconf.Node{}}
	var lines []string
	var walk func(nodes []*nginxconf.Node, depth int, inStream bool)
	walk = func(nodes []*nginxconf.Node, depth int, inStream bool) {
		for _, n := range nodes {
			lines = append(lines, nginxLine(n, depth))
			if !n.Block {
				continue
			}
			name, dynamic := nginxDynamic(n, inStream)
			if !dynamic {
				walk(n.Children, depth+1, inStream || (depth == 0 && n.Name() == "stream"))
				continue
			}
			ups.order = append(ups.order, name)
			ups.servers[name] = []*nginxconf.Node{}
			var rest []*nginxconf.Node
			for _, c := range n.Children {
				if c.Name() == "server" && !c.Block {
					ups.servers[name] = append(ups.servers[name], c)
				} else {
					rest = append(rest, c)
				}
			}
			walk(rest, depth+1, inStream)
		}
	}
	walk(nodes, 0, false)
	return lines, ups
}

func nginxLine(n *nginxconf.Node, depth int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d", depth)
	for _, a := range n.Args {
		fmt.Fprintf(&b, "\x00%c%s", a.Kind, a.Val)
	}
	if n.Block {
		b.WriteString("\x00{")
	}
	return b.String()
}

// nginxFirstDiff names the first directive that differs, for the log.
func nginxFirstDiff(old, new []string, i int) string {
	show := func(s []string) string {
		if i >= len(s) {
			return "(end of file)"
		}
		f := strings.Split(s[i], "\x00")[1:]
		for j := range f {
			if f[j] != "{" {
				f[j] = f[j][1:] // the token kind
			}
		}
		line := strings.Join(f, " ")
		if len(line) > 80 {
			line = line[:77] + "..."
		}
		return strconv.Quote(line)
	}
	return fmt.Sprintf("directive %d differs: %s, was %s", i+1, show(new), show(old))
}

// nginxBalanceCall is the one Lua body the renderer knows how to feed.
var nginxBalanceCall = regexp.MustCompile(`^\s*(?:return\s+)?switchyard\.balance\(\s*(?:"([^"'\\\s]+)"|'([^"'\\\s]+)')\s*\)\s*;?\s*$`)

// nginxDynamic reports whether n is an http upstream block that hands
// its balancing to switchyard.balance with its own name.
func nginxDynamic(n *nginxconf.Node, inStream bool) (string, bool) {
	if inStream || n.Name() != "upstream" || len(n.Args) != 2 {
		return "", false
	}
	name := n.Args[1].Val
	for _, c := range n.Children {
		if c.Name() != "balancer_by_lua_block" || len(c.Args) != 2 {
			continue
		}
		m := nginxBalanceCall.FindStringSubmatch(c.Args[1].Val)
		return name, m != nil && m[1]+m[2] == name
	}
	return "", false
}

func nginxSameLines(a, b []*nginxconf.Node) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if nginxLine(a[i], 0) != nginxLine(b[i], 0) {
			return false
		}
	}
	return true
}

func nginxServers(upstream string, lines []*nginxconf.Node) ([]NginxServer, error) {
	out := make([]NginxServer, 0, len(lines))
	for _, l := range lines {
		s, err := nginxServer(l.Vals())
		if err != nil {
			return nil, structural("nginx: upstream %s: server %s: %v", upstream, strings.Join(l.Vals()[1:], " "), err)
		}
		out = append(out, s)
	}
	return out, nil
}

// nginxServer reads "server ADDR [PARAM...]" as the balancer takes it.
func nginxServer(words []string) (NginxServer, error) {
	if len(words) < 2 {
		return NginxServer{}, fmt.Errorf("no address")
	}
	addr, err := nginxAddr(words[1])
	if err != nil {
		return NginxServer{}, err
	}
	s := NginxServer{Server: Server{Addr: addr}, MaxFails: 1, FailTimeout: 10 * time.Second}
	for _, p := range words[2:] {
		key, val, _ := strings.Cut(p, "=")
		switch {
		case p == "down":
			s.Down = true
		case key == "weight" && val != "":
			s.Weight, err = strconv.Atoi(val)
			if err != nil || s.Weight < 1 {
				return s, fmt.Errorf("weight %q is not a positive integer", val)
			}
		case key == "max_fails" && val != "":
			s.MaxFails, err = strconv.Atoi(val)
			if err != nil || s.MaxFails < 0 {
				return s, fmt.Errorf("max_fails %q is not an integer >= 0", val)
			}
		case key == "fail_timeout" && val != "":
			if s.FailTimeout, err = nginxTime(val); err != nil {
				return s, err
			}
		default:
			return s, fmt.Errorf("parameter %q needs nginx's own balancer (a reload)", p)
		}
	}
	return s, nil
}

// nginxAddr checks that a server address is a literal IP with an optional
// port (nginx's default 80) and returns it as host:port. A name is not
// taken: nginx resolves it once, at load, into any number of peers.
func nginxAddr(a string) (string, error) {
	host, port := a, "80"
	if strings.HasPrefix(a, "[") {
		end := strings.Index(a, "]")
		if end < 0 {
			return "", fmt.Errorf("address %q has no closing bracket", a)
		}
		host = a[1:end]
		if rest := a[end+1:]; rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return "", fmt.Errorf("address %q is not [IPv6]:port", a)
			}
			port = rest[1:]
		}
	} else if h, p, ok := strings.Cut(a, ":"); ok {
		host, port = h, p
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" || (ip.Is6() != strings.HasPrefix(a, "[")) {
		return "", fmt.Errorf("address %q is not a literal IP address (host:port, [IPv6]:port)", a)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return "", fmt.Errorf("address %q: port %q is not 1-65535", a, port)
	}
	if ip.Is6() {
		return "[" + host + "]:" + port, nil
	}
	return host + ":" + port, nil
}

// nginxTime reads an nginx time ("10", "10s", "500ms", "1m30s"): a bare
// number is seconds.
func nginxTime(v string) (time.Duration, error) {
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || strings.ContainsAny(v, ".-+") || strings.Contains(v, "us") || strings.Contains(v, "ns") {
		return 0, fmt.Errorf("fail_timeout %q is not an nginx time this renderer reads (e.g. 10s, 500ms, 1m)", v)
	}
	return d, nil
}
