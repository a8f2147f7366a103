package templates_test

// Golden renders of the routing contract (issue 10): every route_* meta
// key, in each shipped template, checked by the real proxies.

import (
	"bytes"
	"fmt"
	"testing"

	dep "github.com/hashicorp/consul-template/dependency"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// contractEnv is the renderer environment of the contract goldens.
var contractEnv = []string{"SWITCHYARD_LISTEN=" + fuzzListen, "SWITCHYARD_NGINX_GRPC_LISTEN=127.0.0.1:18081"}

// inst is a passing instance with meta given as key, value pairs.
func inst(name, id, addr string, port int, kv ...string) *dep.HealthService {
	meta := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		meta[kv[i]] = kv[i+1]
	}
	return &dep.HealthService{Node: "node1", ID: id, Name: name, Address: addr, Port: port, Status: "passing", ServiceMeta: meta}
}

// svc is a service in the catalog, its tags the union of its instances'.
func svc(name string, ins ...*dep.HealthService) catService {
	s := catService{name: name, instances: []*dep.HealthService{}}
	for _, in := range ins {
		s.instances = append(s.instances, in)
		s.tags = append(s.tags, in.Tags...)
	}
	return s
}

func tagged(in *dep.HealthService, tags ...string) *dep.HealthService {
	in.Tags = tags
	return in
}

// contractScenarios are catalogs in Consul's order (sorted by name).
var contractScenarios = []struct {
	name string
	env  []string
	c    catalog
}{
	{name: "hosts", c: catalog{
		svc("api", inst("api", "api-1", "10.0.0.5", 9000)),
		svc("web",
			inst("web", "web-1", "10.0.0.1", 80, "route_host", "www.example.com, Example.com"),
			inst("web", "web-2", "10.0.0.2", 80, "route_host", "*.example.org")),
	}},
	{name: "gateway", c: catalog{
		svc("orders", inst("orders", "orders-1", "10.0.0.3", 80, "route_host", "api.example.com", "route_path", "/orders/v1.0/")),
		svc("site", inst("site", "site-1", "10.0.0.4", 80, "route_host", "api.example.com")),
		svc("users", inst("users", "users-1", "10.0.0.2", 80, "route_host", "api.example.com", "route_path", "/users", "route_strip", "true")),
		// Later in Consul's order: the host and path stay users'.
		svc("zz-rogue", inst("zz-rogue", "rogue-1", "10.0.0.9", 80, "route_host", "api.example.com,rogue.example.com", "route_path", "/users/")),
	}},
	{name: "protocols", c: catalog{
		svc("cache", inst("cache", "cache-1", "10.0.0.6", 6379, "route_proto", "tcp", "route_port", "15432")),
		svc("chat", inst("chat", "chat-1", "10.0.0.2", 80, "route_proto", "ws", "route_host", "chat.example.com")),
		svc("db", inst("db", "db-1", "10.0.0.5", 5432, "route_proto", "tcp", "route_port", "15432")),
		svc("listener", inst("listener", "l-1", "10.0.0.7", 80, "route_proto", "tcp", "route_port", "18080")),
		svc("noport", inst("noport", "n-1", "10.0.0.8", 80, "route_proto", "tcp")),
		svc("rpc", inst("rpc", "rpc-1", "10.0.0.3", 50051, "route_proto", "grpc", "route_host", "rpc.example.com")),
	}},
	{name: "balancing", c: catalog{
		svc("shop",
			inst("shop", "blue", "10.0.0.1", 80, "route_weight", "3", "route_health", "/healthz", "route_sticky", "true", "route_https", "redirect"),
			inst("shop", "green", "10.0.0.2", 80, "route_weight", "1", "route_health", "/ignored-not-first")),
	}},
	{name: "hostile-meta", c: catalog{
		svc("web", inst("web", "web-1", "10.0.0.1", 80,
			"route_host", "ok.example.com,evil.com;include /etc/passwd,}\nserver {,日本.jp,*.*.x,"+fmt.Sprintf("%0300d", 0),
			"route_path", "/a b;", "route_strip", "yes", "route_proto", "udp", "route_port", "0",
			"route_health", "/h\"", "route_sticky", "{", "route_https", "redirect\n    include x;"),
			inst("web", "web-2", "10.0.0.2", 80, "route_weight", "257")),
	}},
	{name: "tag-filter", env: []string{"SWITCHYARD_ROUTE_TAG=public"}, c: catalog{
		svc("admin", inst("admin", "admin-1", "10.0.0.9", 80)),
		svc("web", tagged(inst("web", "web-1", "10.0.0.1", 80), "public"), inst("web", "web-internal", "10.0.0.2", 80)),
	}},
}

// TestContractTemplates renders each contract scenario through the three
// templates, compares with the goldens and has each proxy check its file.
func TestContractTemplates(t *testing.T) {
	nginx, haproxy, caddy := testenv.NginxBinary(t), testenv.HAProxyBinary(t), testenv.CaddyBinary(t)
	for _, s := range contractScenarios {
		t.Run(s.name, func(t *testing.T) {
			env := append(append([]string{}, contractEnv...), s.env...)
			n := renderCatalog(t, "nginx.conf.tmpl", s.c, env)
			golden(t, "contract-"+s.name+".nginx.conf", n)
			noInjectedDirective(t, n, "include", "return 200")
			nginxAccepts(t, nginx, n)
			h := renderCatalog(t, "haproxy.cfg.tmpl", s.c, env)
			golden(t, "contract-"+s.name+".haproxy.cfg", h)
			noInjectedDirective(t, h, "include")
			haproxyAccepts(t, haproxy, h)
			c := renderCatalog(t, caddyTmpl, s.c, append(append([]string{}, caddyEnv...), s.env...))
			golden(t, "contract-"+s.name+".Caddyfile", c)
			noInjectedDirective(t, c, "include", "import")
			caddyAccepts(t, caddy, c)
		})
	}
}

// TestNginxGRPCNeedsItsListener: without SWITCHYARD_NGINX_GRPC_LISTEN a
// gRPC service has no route in nginx (1.22 cannot serve HTTP/1.1 and h2c
// on one port), says so, and the rest still validates.
func TestNginxGRPCNeedsItsListener(t *testing.T) {
	nginx := testenv.NginxBinary(t)
	c := contractScenarios[2].c // protocols
	out := renderCatalog(t, "nginx.conf.tmpl", c, []string{"SWITCHYARD_LISTEN=" + fuzzListen})
	for _, w := range []string{`# no route for "rpc": route_proto grpc needs SWITCHYARD_NGINX_GRPC_LISTEN`, "upstream svc_chat {"} {
		if !bytes.Contains(out, []byte(w)) {
			t.Errorf("%q missing:\n%s", w, out)
		}
	}
	if bytes.Contains(out, []byte("http2")) || bytes.Contains(out, []byte("grpc_pass")) {
		t.Errorf("a gRPC route without its listener:\n%s", out)
	}
	nginxAccepts(t, nginx, out)
}
