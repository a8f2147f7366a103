package membership

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// HAProxy diffs two versions of one HAProxy config file. The only
// differences it accepts are server lines in backend and listen sections
// that exist in both: a server added or removed, its address, weight or
// disabled flag changed. Anything else is Structural. Comments and blank
// lines are not part of the config: a change to them alone is an empty
// Delta.
func HAProxy(old, new []byte) (Delta, error) {
	c, err := HAProxyDiff(old, new)
	return c.Delta, err
}

// HAProxyChange is a Delta with what HAProxy's runtime API needs besides:
// "add server" takes the words of the server line after the address.
type HAProxyChange struct {
	Delta
	// Args holds, for every server of a changed pool ("backend/server"),
	// the words of its new line after the address, as written.
	Args map[string][]string
}

// HAProxyDiff is HAProxy with the words each server line of a changed
// pool has after its address.
//
// A Server's Weight is HAProxy's effective one (1 when the line sets
// none); Down is the line's "disabled". Servers are added only where the
// runtime API creates them as a reload would (see addable); other changes
// to their pools are Structural.
func HAProxyDiff(old, new []byte) (HAProxyChange, error) {
	if bytes.Equal(old, new) {
		return HAProxyChange{}, nil
	}
	a, err := parseHAProxy(old)
	if err != nil {
		return HAProxyChange{}, err
	}
	b, err := parseHAProxy(new)
	if err != nil {
		return HAProxyChange{}, err
	}
	if len(a) != len(b) {
		return HAProxyChange{}, sectionsDiffer(a, b)
	}
	out := HAProxyChange{Args: map[string][]string{}}
	for i := range a {
		if err := sameSection(a[i], b[i]); err != nil {
			return HAProxyChange{}, err
		}
		if !a[i].pool() {
			continue
		}
		p, changed, err := diffPool(a[i], b[i], b)
		if err != nil {
			return HAProxyChange{}, err
		}
		if !changed {
			continue
		}
		out.Pools = append(out.Pools, p)
		for _, s := range b[i].servers {
			out.Args[p.Name+"/"+s.name] = s.opts
		}
	}
	if out.Empty() {
		out.Args = nil
	}
	return out, nil
}

// sectionsDiffer names the first section that one config has and the
// other has not.
func sectionsDiffer(a, b []*hxSection) error {
	for i := range max(len(a), len(b)) {
		switch {
		case i >= len(a):
			return structural("line %d: section %q added", b[i].at, strings.Join(b[i].head, " "))
		case i >= len(b), !slices.Equal(a[i].head, b[i].head):
			return structural("section %q (line %d) removed or replaced", strings.Join(a[i].head, " "), a[i].at)
		}
	}
	return nil
}

// hxSection is one section of an HAProxy config: its header line and its
// other lines as words, server lines of a backend or listen apart.
type hxSection struct {
	head    []string   // "backend", "svc_web" ...; empty for lines before the first section
	lines   [][]string // every line but the header and pool servers, in order
	servers []hxServer // a pool's server lines, in order
	at      int        // the header's line number
}

type hxServer struct {
	name, addr string
	opts       []string // the words after the address
	at         int
}

func (s *hxSection) kind() string {
	if len(s.head) == 0 {
		return ""
	}
	return s.head[0]
}

// name is the section's name: "global" has none.
func (s *hxSection) name() string {
	if len(s.head) < 2 {
		return s.kind()
	}
	return s.head[1]
}

// pool reports whether the section's server lines are a pool of servers
// the runtime API manages (peers and ring sections have server lines
// too, of another kind).
func (s *hxSection) pool() bool { return s.kind() == "backend" || s.kind() == "listen" }

// hxSections are the keywords that start a section in HAProxy 2.6 and
// the versions around it.
var hxSections = map[string]bool{
	"global": true, "defaults": true, "frontend": true, "backend": true, "listen": true,
	"peers": true, "resolvers": true, "userlist": true, "mailers": true, "program": true,
	"http-errors": true, "ring": true, "cache": true, "fcgi-app": true, "log-forward": true,
	"dynamic-update": true, "traces": true, "crt-store": true,
}

// parseHAProxy cuts a config into sections. Conditional blocks (.if) make
// lines count or not depending on the running HAProxy: such a file is not
// diffed.
func parseHAProxy(cfg []byte) ([]*hxSection, error) {
	secs := []*hxSection{{}}
	for n, line := range strings.Split(string(cfg), "\n") {
		w := hxWords(line)
		if len(w) == 0 {
			continue
		}
		switch cur := secs[len(secs)-1]; {
		case slices.Contains([]string{".if", ".elif", ".else", ".endif"}, w[0]):
			return nil, structural("line %d: conditional blocks (%s) are not diffed", n+1, w[0])
		case hxSections[w[0]]:
			secs = append(secs, &hxSection{head: w, at: n + 1})
		case cur.pool() && w[0] == "server" && len(w) >= 3:
			cur.servers = append(cur.servers, hxServer{name: w[1], addr: w[2], opts: w[3:], at: n + 1})
		default:
			cur.lines = append(cur.lines, w)
		}
	}
	return secs, nil
}

// hxWords cuts a config line into words as HAProxy does, up to a comment,
// keeping each word as written (quotes and escapes included): two words
// written alike mean the same. An unterminated quote keeps the rest of
// the line in the word; HAProxy rejects such a line anyway.
func hxWords(line string) []string {
	var words []string
	var cur strings.Builder
	in := byte(0) // the quote we are in
	flush := func() {
		if cur.Len() > 0 {
			words = append(words, cur.String())
			cur.Reset()
		}
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case in == 0 && (c == ' ' || c == '\t' || c == '\r'):
			flush()
			continue
		case in == 0 && c == '#':
			flush()
			return words
		case c == '\\' && in != '\'' && i+1 < len(line):
			cur.WriteByte(c)
			i++
			c = line[i]
		case c == '"' || c == '\'':
			if in == 0 {
				in = c
			} else if in == c {
				in = 0
			}
		}
		cur.WriteByte(c)
	}
	flush()
	return words
}

// sameSection: two sections at the same place must have the same header
// and the same lines but for a pool's servers.
func sameSection(a, b *hxSection) error {
	if !slices.Equal(a.head, b.head) {
		return structural("line %d: section %q is now %q", b.at, strings.Join(a.head, " "), strings.Join(b.head, " "))
	}
	for i := range max(len(a.lines), len(b.lines)) {
		if i >= len(a.lines) || i >= len(b.lines) || !slices.Equal(a.lines[i], b.lines[i]) {
			return structural("%s %s: a line other than a server changed (%s)", a.kind(), a.name(), lineAt(a.lines, b.lines, i))
		}
	}
	return nil
}

func lineAt(a, b [][]string, i int) string {
	switch {
	case i >= len(a):
		return fmt.Sprintf("added %q", strings.Join(b[i], " "))
	case i >= len(b):
		return fmt.Sprintf("removed %q", strings.Join(a[i], " "))
	}
	return fmt.Sprintf("%q is now %q", strings.Join(a[i], " "), strings.Join(b[i], " "))
}

// hxOpts is a server line's options split into what the runtime API can
// change (weight, disabled) and the rest, which must stay as it is.
type hxOpts struct {
	fixed   []string
	weight  int
	down    bool
	unknown string // the first keyword we do not know the arguments of
}

// parseOpts walks a server line's options keyword by keyword. After a
// keyword we do not know, we cannot tell keywords from arguments: the
// rest of the line is fixed, as written.
func parseOpts(opts []string) hxOpts {
	o := hxOpts{weight: 1}
	for i := 0; i < len(opts); i++ {
		kw := opts[i]
		arity, ok := hxServerKeywords[kw]
		if !ok {
			o.fixed = append(o.fixed, opts[i:]...)
			o.unknown = kw
			return o
		}
		switch {
		case kw == "weight" && i+1 < len(opts):
			if w, err := strconv.Atoi(opts[i+1]); err == nil {
				o.weight = w
			} else {
				o.fixed = append(o.fixed, opts[i:i+2]...) // HAProxy rejects it; keep it compared
			}
		case kw == "disabled":
			o.down = true
		case kw == "enabled":
			o.down = false
		default:
			o.fixed = append(o.fixed, opts[i:min(len(opts), i+1+arity.args)]...)
		}
		i += arity.args
	}
	return o
}

// hxKeyword is what we know of a server keyword: how many arguments it
// takes, and whether "add server" accepts it (HAProxy 2.6 management
// guide, "add server"). Agent checks, track and source are left out on
// purpose: an agent can bring a server out of maintenance on its own, a
// tracked server cannot be deleted, and source takes a variable number of
// arguments.
type hxKeyword struct {
	args    int
	dynamic bool
}

var hxServerKeywords = func() map[string]hxKeyword {
	m := map[string]hxKeyword{}
	for _, k := range strings.Fields(`allow-0rtt backup check check-send-proxy check-ssl check-via-socks4
		disabled enabled force-sslv3 force-tlsv10 force-tlsv11 force-tlsv12 force-tlsv13 no-ssl-reuse
		no-sslv3 no-tlsv10 no-tlsv11 no-tlsv12 no-tlsv13 no-tls-tickets send-proxy send-proxy-v2
		send-proxy-v2-ssl send-proxy-v2-ssl-cn ssl tfo tls-tickets`) {
		m[k] = hxKeyword{args: 0, dynamic: true}
	}
	for _, k := range strings.Fields(`alpn addr ca-file check-alpn check-proto check-sni ciphers
		ciphersuites crl-file crt downinter error-limit fall fastinter id inter maxconn maxqueue
		minconn npn observe on-error on-marked-down on-marked-up pool-low-conn pool-max-conn
		pool-purge-delay port proto proxy-v2-options rise slowstart sni ssl-max-ver ssl-min-ver
		verify verifyhost weight ws`) {
		m[k] = hxKeyword{args: 1, dynamic: true}
	}
	for _, k := range strings.Fields(`agent-check no-agent-check no-backup no-check no-check-ssl
		no-send-proxy no-send-proxy-v2 no-ssl no-tfo no-verifyhost non-stick stick`) {
		m[k] = hxKeyword{args: 0}
	}
	for _, k := range strings.Fields(`agent-addr agent-inter agent-port agent-send cookie redir
		resolvers resolve-prefer resolve-net resolve-opts init-addr namespace log-proto socks4 tcp-ut
		track max-reuse shard`) {
		m[k] = hxKeyword{args: 1}
	}
	return m
}()

// diffPool compares the servers of one backend or listen section. file is
// the new config, for the defaults the section takes.
func diffPool(a, b *hxSection, file []*hxSection) (Pool, bool, error) {
	old, err := serversByName(a)
	if err != nil {
		return Pool{}, false, err
	}
	if _, err := serversByName(b); err != nil {
		return Pool{}, false, err
	}
	p := Pool{Name: b.name()}
	changed, adds := len(a.servers) != len(b.servers), false
	for _, s := range b.servers {
		srv, add, mod, err := diffServer(b, old, s)
		if err != nil {
			return Pool{}, false, err
		}
		p.Servers = append(p.Servers, srv)
		changed, adds = changed || add || mod, adds || add
	}
	if !changed {
		return Pool{}, false, nil
	}
	for _, s := range a.servers {
		p.Old = append(p.Old, s.member())
	}
	if err := runtimeLB(b, file, adds); err != nil {
		return Pool{}, false, err
	}
	return p, true, nil
}

func serversByName(sec *hxSection) (map[string]hxServer, error) {
	m := map[string]hxServer{}
	for _, s := range sec.servers {
		if _, dup := m[s.name]; dup {
			return nil, structural("%s %s: two servers named %q", sec.kind(), sec.name(), s.name)
		}
		m[s.name] = s
	}
	return m, nil
}

func (s hxServer) member() Server {
	o := parseOpts(s.opts)
	return Server{Name: s.name, Addr: s.addr, Weight: o.weight, Down: o.down, Backup: slices.Contains(o.fixed, "backup")}
}

// diffServer compares a server of the new config with the one of the same
// name in the old. add: it must be created ("add server"): it is new, or
// it was disabled in the config, a flag the runtime API cannot clear.
// mod: its address, weight or disabled flag changed.
func diffServer(sec *hxSection, old map[string]hxServer, s hxServer) (srv Server, add, mod bool, err error) {
	srv = s.member()
	prev, ok := old[s.name]
	if !ok {
		return srv, true, true, addable(sec, s)
	}
	po, no := parseOpts(prev.opts), parseOpts(s.opts)
	if !slices.Equal(po.fixed, no.fixed) {
		return srv, false, false, structural("server %s/%s (line %d): options other than the address, weight and disabled changed (%q is now %q)",
			sec.name(), s.name, s.at, strings.Join(prev.opts, " "), strings.Join(s.opts, " "))
	}
	if prev.addr != s.addr {
		if _, err := HAProxyAddr(s.addr); err != nil {
			return srv, false, false, structural("server %s/%s (line %d): %v", sec.name(), s.name, s.at, err)
		}
	}
	if po.down && !no.down {
		return srv, true, true, addable(sec, s)
	}
	return srv, false, prev.addr != s.addr || po.weight != no.weight || po.down != no.down, nil
}

// addable says whether "add server" creates s as a reload would: a
// literal address and port (a dynamic server does not resolve names),
// only keywords the runtime API takes, and words the CLI passes as they
// are (no quotes, escapes or command separators).
func addable(sec *hxSection, s hxServer) error {
	where := fmt.Sprintf("server %s/%s (line %d)", sec.name(), s.name, s.at)
	if _, err := HAProxyAddr(s.addr); err != nil {
		return structural("%s: %v", where, err)
	}
	for _, w := range append([]string{s.name}, s.opts...) {
		if strings.ContainsAny(w, "\"'\\;$") {
			return structural("%s: %q cannot be passed to the runtime API as written", where, w)
		}
	}
	if o := parseOpts(s.opts); o.unknown != "" {
		return structural("%s: %q is not a server keyword we know", where, o.unknown)
	}
	for i := 0; i < len(s.opts); i++ {
		k := hxServerKeywords[s.opts[i]]
		if !k.dynamic {
			return structural("%s: add server does not take %q", where, s.opts[i])
		}
		i += k.args
	}
	return nil
}

// HAProxyAddr parses a server address the runtime API can take: a literal
// IPv4 address or a bracketed IPv6 one (no zone), and a port 1-65535.
func HAProxyAddr(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || (strings.Contains(host, ":") && !strings.HasPrefix(s, "[")) {
		return netip.AddrPort{}, fmt.Errorf("address %q is not a literal address:port", s)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("address %q is not a literal IP address", s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 || port != strconv.Itoa(p) {
		return netip.AddrPort{}, fmt.Errorf("address %q has no port 1-65535", s)
	}
	return netip.AddrPortFrom(ip, uint16(p)), nil
}

// runtimeLB says whether the runtime API can change the servers of sec:
// its balance algorithm must be a dynamic one (HAProxy refuses "add
// server" and any weight but 0%/100% with the others, and a map-based hash
// would not be rebuilt as a reload does), and a server to add must not
// need settings from a default-server line, which "add server" ignores.
func runtimeLB(sec *hxSection, file []*hxSection, adds bool) error {
	bal := setting(sec, file, "balance")
	if len(bal) >= 2 {
		algo := strings.ToLower(bal[1])
		switch {
		case algo == "roundrobin", algo == "leastconn", algo == "first", strings.HasPrefix(algo, "random"):
		case algo == "static-rr":
			return structural("%s %s: balance static-rr takes no runtime changes of its servers", sec.kind(), sec.name())
		default:
			if ht := setting(sec, file, "hash-type"); len(ht) < 2 || ht[1] != "consistent" {
				return structural("%s %s: balance %s without hash-type consistent takes no runtime changes of its servers", sec.kind(), sec.name(), bal[1])
			}
		}
	}
	if adds && setting(sec, file, "default-server") != nil {
		return structural("%s %s: add server would not apply its default-server settings", sec.kind(), sec.name())
	}
	return nil
}

// setting returns the last line of sec starting with key, else the one of
// the defaults section sec takes ("from NAME", or the last one before it
// in the file); nil if neither has one. A defaults section of another file
// is not seen: HAProxy's runtime API is the last judge.
func setting(sec *hxSection, file []*hxSection, key string) []string {
	if l := lastLine(sec, key); l != nil {
		return l
	}
	var def *hxSection
	from := slices.Index(sec.head, "from")
	for _, s := range file {
		if s == sec {
			break
		}
		if s.kind() == "defaults" && (from < 0 || (from+1 < len(sec.head) && s.name() == sec.head[from+1])) {
			def = s
		}
	}
	if def == nil {
		return nil
	}
	return lastLine(def, key)
}

func lastLine(sec *hxSection, key string) []string {
	for i := len(sec.lines) - 1; i >= 0; i-- {
		if sec.lines[i][0] == key {
			return sec.lines[i]
		}
	}
	return nil
}
