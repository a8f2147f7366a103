package membership

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Caddy's admin API cannot change one value without a reload: every
// change, /load or a PATCH of one upstream list alike, provisions the
// whole config anew and shuts the old HTTP servers down, which closes
// their idle keep-alive connections under the clients (measured: 405-590
// failed requests in 50 changes either way). What Caddy 2.6 looks up per
// request is a reverse_proxy's dynamic_upstreams; the renderer serves the
// members of each pool from the file to a "dynamic srv" source, and Caddy
// falls back to the file's static upstreams whenever that lookup fails.
// So the file keeps both: upstreams (the truth) and a dynamic srv source
// that names the pool.

// CaddyPool is one pool the renderer can serve to Caddy: the SRV name a
// reverse_proxy's dynamic srv source asks for, the resolvers it asks,
// and the members its static upstreams list.
type CaddyPool struct {
	Name      string   // the queried name: lower case, fully qualified
	Resolvers []string // as written ("127.0.0.1:8053", "udp/...")
	Servers   []Server // Addr is an IP literal and port, as written
	Paths     []string // JSON paths of the handlers that ask for it
}

// Caddy diffs two adapted (JSON) Caddy configs. The only differences it
// accepts are the upstreams of reverse_proxy handlers at the same place
// in both, and only of a handler whose dynamic srv source names a pool
// CaddyPools can serve. Anything else is Structural. A Pool's Name is
// the SRV name (see CaddyPool).
func Caddy(old, new []byte) (Delta, error) {
	if bytes.Equal(old, new) {
		return Delta{}, nil
	}
	a, err := decodeCaddy(old, "running")
	if err != nil {
		return Delta{}, err
	}
	b, err := decodeCaddy(new, "new")
	if err != nil {
		return Delta{}, err
	}
	if p, ok := caddyDiffAt(caddyWithoutUpstreams(a), caddyWithoutUpstreams(b), ""); ok {
		return Delta{}, structural("caddy config differs at %s, not only in reverse_proxy upstreams", caddyPath(p))
	}
	ha, hb := caddyHandlers(a), caddyHandlers(b)
	pools, bad := caddyPools(hb)
	var d Delta
	for i, h := range hb {
		if reflect.DeepEqual(ha[i].upstreams, h.upstreams) {
			continue
		}
		p, err := caddyChangedPool(h, pools, bad)
		if err != nil {
			return Delta{}, err
		}
		old, _ := caddyServers(ha[i].upstreams)
		if !slices.ContainsFunc(d.Pools, func(q Pool) bool { return q.Name == p.Name }) {
			d.Pools = append(d.Pools, Pool{Name: p.Name, Servers: p.Servers, Old: old})
		}
	}
	sort.Slice(d.Pools, func(i, j int) bool { return d.Pools[i].Name < d.Pools[j].Name })
	return d, nil
}

// caddyChangedPool is the pool a handler whose upstreams changed serves, or
// why that change needs a reload.
func caddyChangedPool(h caddyHandler, pools map[string]*CaddyPool, bad map[string]string) (*CaddyPool, error) {
	if h.srv == "" {
		return nil, structural("reverse_proxy at %s has no dynamic srv source: its upstreams change only by a reload", h.path)
	}
	if why, ok := bad[h.srv]; ok {
		return nil, structural("reverse_proxy at %s: pool %s: %s", h.path, h.srv, why)
	}
	return pools[h.srv], nil
}

// CaddyPools lists the pools of an adapted Caddy config that the renderer
// can serve, by name. A pool it cannot serve (an upstream that is not an
// IP literal and port, no upstream at all, handlers that ask for one name
// with different members or resolvers) is left out, with the reason in
// the second map: Caddy's lookup of it fails and Caddy uses the handler's
// static upstreams, the file's, which is what a reload gives.
func CaddyPools(cfg []byte) (map[string]*CaddyPool, map[string]string, error) {
	v, err := decodeCaddy(cfg, "config")
	if err != nil {
		return nil, nil, err
	}
	pools, bad := caddyPools(caddyHandlers(v))
	return pools, bad, nil
}

func caddyPools(hs []caddyHandler) (map[string]*CaddyPool, map[string]string) {
	pools, bad := map[string]*CaddyPool{}, map[string]string{}
	for _, h := range hs {
		if h.srv == "" {
			continue
		}
		if h.srvWhy != "" {
			bad[h.srv] = h.srvWhy
			continue
		}
		servers, err := caddyServers(h.upstreams)
		switch {
		case err != nil:
			bad[h.srv] = err.Error()
			continue
		case len(servers) == 0:
			bad[h.srv] = "no static upstream (an empty answer would make Caddy use no member at all)"
			continue
		}
		p := &CaddyPool{Name: h.srv, Resolvers: h.resolvers, Servers: servers, Paths: []string{h.path}}
		if q, ok := pools[h.srv]; ok {
			if !slices.Equal(q.Servers, p.Servers) || !slices.Equal(q.Resolvers, p.Resolvers) {
				bad[h.srv] = fmt.Sprintf("handlers at %s and %s ask for it with different upstreams or resolvers", q.Paths[0], h.path)
			}
			q.Paths = append(q.Paths, h.path)
			continue
		}
		pools[h.srv] = p
	}
	for name := range bad {
		delete(pools, name)
	}
	return pools, bad
}

// caddyHandler is one reverse_proxy handler of a config.
type caddyHandler struct {
	path      string // JSON path, e.g. /apps/http/servers/srv0/routes/0/handle/0
	upstreams any    // the "upstreams" value as decoded, nil when absent
	srv       string // the dynamic srv source's queried name, "" for none
	srvWhy    string // why that source cannot be served, "" when it can
	resolvers []string
}

// caddyHandlers walks v in document order (object keys sorted) and lists
// its reverse_proxy handlers, wherever they are nested (subroutes, error
// routes, other apps).
func caddyHandlers(v any) []caddyHandler {
	var out []caddyHandler
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch t := v.(type) {
		case map[string]any:
			if t["handler"] == "reverse_proxy" {
				out = append(out, newCaddyHandler(t, path))
			}
			keys := make([]string, 0, len(t))
			for k := range t {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				walk(t[k], path+"/"+k)
			}
		case []any:
			for i, e := range t {
				walk(e, path+"/"+strconv.Itoa(i))
			}
		}
	}
	walk(v, "")
	return out
}

func newCaddyHandler(h map[string]any, path string) caddyHandler {
	out := caddyHandler{path: caddyPath(path), upstreams: h["upstreams"]}
	d, ok := h["dynamic_upstreams"].(map[string]any)
	if !ok || d["source"] != "srv" {
		return out
	}
	name, _ := d["name"].(string)
	service, _ := d["service"].(string)
	proto, _ := d["proto"].(string)
	if service != "" || proto != "" {
		name = fmt.Sprintf("_%s._%s.%s", service, proto, name)
	}
	out.srv = strings.ToLower(strings.TrimSuffix(name, ".")) + "."
	if r, ok := d["resolver"].(map[string]any); ok {
		if as, ok := r["addresses"].([]any); ok {
			for _, a := range as {
				s, _ := a.(string)
				out.resolvers = append(out.resolvers, s)
			}
		}
	}
	switch {
	case name == "" || strings.ContainsAny(name, "{}"):
		out.srvWhy = fmt.Sprintf("SRV name %q is empty or has a placeholder", name)
	case len(out.resolvers) == 0:
		out.srvWhy = "the srv source names no resolver (it would ask the system's DNS)"
	}
	return out
}

// caddyServers reads a handler's static upstreams. Only {"dial":
// "IP:port"} can be served as an SRV record: a host name, a placeholder,
// a network prefix, a zone or another field is an error.
func caddyServers(v any) ([]Server, error) {
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("upstreams is not a list")
	}
	out := make([]Server, 0, len(list))
	for i, u := range list {
		m, ok := u.(map[string]any)
		dial, _ := m["dial"].(string)
		if !ok || len(m) != 1 || dial == "" {
			return nil, fmt.Errorf("upstream %d is not a plain {\"dial\": ...}", i)
		}
		ap, err := netip.ParseAddrPort(dial)
		if err != nil || ap.Addr().Zone() != "" || ap.Port() == 0 {
			return nil, fmt.Errorf("upstream %d dials %q, not an IP literal and port", i, dial)
		}
		out = append(out, Server{Addr: dial})
	}
	return out, nil
}

// decodeCaddy decodes an adapted config, numbers kept as written.
func decodeCaddy(b []byte, which string) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, structural("%s caddy config is not JSON: %v", which, err)
	}
	if dec.More() {
		return nil, structural("%s caddy config has data after its JSON value", which)
	}
	return v, nil
}

// caddyWithoutUpstreams is a copy of v with the upstreams of every
// reverse_proxy handler taken out.
func caddyWithoutUpstreams(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			if k == "upstreams" && t["handler"] == "reverse_proxy" {
				continue
			}
			out[k] = caddyWithoutUpstreams(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = caddyWithoutUpstreams(e)
		}
		return out
	}
	return v
}

// caddyDiffAt returns the JSON path of the first difference of a and b, in
// document order. Numbers compare by value: Caddy's admin API writes back
// what it loaded in its own format.
func caddyDiffAt(a, b any, path string) (string, bool) {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok {
			return path, true
		}
		keys := make([]string, 0, len(x)+len(y))
		for k := range x {
			keys = append(keys, k)
		}
		for k := range y {
			if _, ok := x[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			if p, ok := caddyDiffAt(x[k], y[k], path+"/"+k); ok {
				return p, true
			}
		}
		return "", false
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return path, true
		}
		for i := range x {
			if p, ok := caddyDiffAt(x[i], y[i], path+"/"+strconv.Itoa(i)); ok {
				return p, true
			}
		}
		return "", false
	case json.Number:
		y, ok := b.(json.Number)
		return path, !ok || !caddySameNumber(x, y)
	}
	return path, !reflect.DeepEqual(a, b)
}

func caddySameNumber(a, b json.Number) bool {
	if a == b {
		return true
	}
	x, err1 := strconv.ParseFloat(string(a), 64)
	y, err2 := strconv.ParseFloat(string(b), 64)
	return err1 == nil && err2 == nil && x == y
}

func caddyPath(p string) string {
	if p == "" {
		return "/"
	}
	return p
}
