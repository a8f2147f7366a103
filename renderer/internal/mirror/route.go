package mirror

import (
	"net/http"
	"net/url"
	"strings"
)

// kind says which upstream change refreshes a cached answer.
type kind int

const (
	// kindService: the catalog dump says this service's instances,
	// checks or nodes changed.
	kindService kind = iota
	// kindCatalog: anything in the catalog dump changed (service list,
	// nodes, a node's services).
	kindCatalog
	// kindKV: the KV watch moved.
	kindKV
	// kindPoll: nothing the mirror watches covers it (another
	// datacenter, a peer, a namespace, an endpoint it does not model):
	// asked again every pollEvery while watched.
	kindPoll
	// kindPass: answered by the agent each time (status, writes).
	kindPass
)

// route is where one request belongs.
type route struct {
	kind     kind
	service  string // kindService only
	endpoint string // metrics label: a fixed set, never a name
	// key identifies the answer: path and query without index and wait,
	// query keys sorted. pathQuery is what the mirror asks upstream.
	key string
}

// servicePrefixes are the per-service endpoints consul-template's
// dependencies read; each blocks in Consul on that service's index.
var servicePrefixes = map[string]string{
	"/v1/health/service/":  "health/service",
	"/v1/health/connect/":  "health/connect",
	"/v1/health/ingress/":  "health/ingress",
	"/v1/health/checks/":   "health/checks",
	"/v1/catalog/service/": "catalog/service",
	"/v1/catalog/connect/": "catalog/connect",
}

// catalogPrefixes change only when the catalog dump changes.
var catalogPrefixes = map[string]string{
	"/v1/catalog/services":       "catalog/services",
	"/v1/catalog/nodes":          "catalog/nodes",
	"/v1/catalog/node/":          "catalog/node",
	"/v1/catalog/node-services/": "catalog/node-services",
	"/v1/health/node/":           "health/node",
	"/v1/health/state/":          "health/state",
}

// remoteParams select data the local catalog dump does not cover.
var remoteParams = []string{"dc", "peer", "ns", "partition", "sg"}

// classify routes a request. The key keeps every parameter but index and
// wait, so "passing", "tag", "filter", "stale" and "near" each get an
// answer of their own, computed by Consul.
func classify(r *http.Request) route {
	p := r.URL.EscapedPath()
	if r.Method != http.MethodGet || strings.HasPrefix(p, "/v1/status/") {
		return route{kind: kindPass, endpoint: "passthrough", key: p}
	}
	q := r.URL.Query()
	q.Del("index")
	q.Del("wait")
	q.Del("token") // the mirror's secret, never part of an answer's key
	key := p
	if enc := q.Encode(); enc != "" {
		key += "?" + enc
	}
	rt := route{kind: kindPoll, endpoint: "other", key: key}
	remote := false
	for _, k := range remoteParams {
		remote = remote || q.Has(k)
	}
	switch {
	case strings.HasPrefix(p, "/v1/kv/"):
		rt.kind, rt.endpoint = kindKV, "kv"
		if remote {
			rt.kind = kindPoll
		}
		return rt
	case remote:
		return rt
	}
	for pre, ep := range servicePrefixes {
		if name, ok := strings.CutPrefix(p, pre); ok && name != "" && !strings.Contains(name, "/") {
			if n, err := url.PathUnescape(name); err == nil {
				rt.kind, rt.service, rt.endpoint = kindService, n, ep
			}
			return rt
		}
	}
	for pre, ep := range catalogPrefixes {
		if p == pre || (strings.HasSuffix(pre, "/") && strings.HasPrefix(p, pre)) {
			rt.kind, rt.endpoint = kindCatalog, ep
			return rt
		}
	}
	return rt
}
