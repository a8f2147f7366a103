package service

import (
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/registrar/internal/container"
)

// labelled makes route values as SERVICE_<KEY> labels would.
func labelled(kv map[string]string) map[string]routeValue {
	in := map[string]routeValue{}
	for k, v := range kv {
		in[k] = routeValue{Value: v, Key: "SERVICE_" + strings.ToUpper(k), Raw: v}
	}
	return in
}

func TestNormalizeRoute(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	name253 := strings.Join([]string{label63, label63, label63, strings.Repeat("b", 61)}, ".") // 253 bytes
	tests := []struct {
		name string
		in   map[string]string
		want map[string]string
		errs []string // the keys the rejections name, in order
	}{
		{"empty", nil, map[string]string{}, nil},
		{"the whole contract, normalised",
			map[string]string{"route_host": " API.Example.com, api.example.com ,*.Example.COM,,", "route_path": " /api/v1 ",
				"route_strip": "YES", "route_proto": "WS", "route_weight": "010", "route_health": "/healthz",
				"route_sticky": "0", "route_https": "Redirect"},
			map[string]string{"route_host": "api.example.com,*.example.com", "route_path": "/api/v1", "route_strip": "true",
				"route_proto": "ws", "route_weight": "10", "route_health": "/healthz", "route_sticky": "false", "route_https": "redirect"}, nil},
		{"tcp with its port", map[string]string{"route_proto": "tcp", "route_port": "+5432"},
			map[string]string{"route_proto": "tcp", "route_port": "5432"}, nil},
		{"grpc", map[string]string{"route_host": "g.example.com", "route_proto": "grpc"},
			map[string]string{"route_host": "g.example.com", "route_proto": "grpc"}, nil},
		{"empty values count as not set", map[string]string{"route_host": " ", "route_path": ""}, map[string]string{}, nil},
		{"253-byte name, 63-byte labels, digits, IP-like names",
			map[string]string{"route_host": name253 + ",10.0.0.1,a-b.c0"},
			map[string]string{"route_host": name253 + ",10.0.0.1,a-b.c0"}, nil},

		// A bad host is dropped on its own; the route keeps the others.
		{"one bad host of two", map[string]string{"route_host": "a.example.com,b_c.example.com", "route_path": "/x"},
			map[string]string{"route_host": "a.example.com", "route_path": "/x"}, []string{"SERVICE_ROUTE_HOST"}},
		{"several bad hosts, one good", map[string]string{"route_host": "a.com:80,ok.com,-a.com,a-.com,a..com,.a.com,a.com.,*,*.,*.*.a.com,foo.*"},
			map[string]string{"route_host": "ok.com"}, repeat("SERVICE_ROUTE_HOST", 10)},

		// Hostile values: nothing of them reaches the meta.
		{"host with a quote and semicolon", map[string]string{"route_host": `a.com";evil`, "route_weight": "5"}, map[string]string{}, []string{"SERVICE_ROUTE_HOST"}},
		{"host with braces", map[string]string{"route_host": "a.com{}"}, map[string]string{}, []string{"SERVICE_ROUTE_HOST"}},
		{"host with a newline inside", map[string]string{"route_host": "a.com\nserver_name evil.com"}, map[string]string{}, []string{"SERVICE_ROUTE_HOST"}},
		{"host with spaces inside", map[string]string{"route_host": "a.com b.com"}, map[string]string{}, []string{"SERVICE_ROUTE_HOST"}},
		{"trailing newline is whitespace", map[string]string{"route_host": "a.com\n"}, map[string]string{"route_host": "a.com"}, nil},
		{"unicode host (IDN not in punycode)", map[string]string{"route_host": "bücher.de"}, map[string]string{}, []string{"SERVICE_ROUTE_HOST"}},
		{"Kelvin sign is not k", map[string]string{"route_host": "\u212Aa.com"}, map[string]string{}, []string{"SERVICE_ROUTE_HOST"}},
		{"punycode", map[string]string{"route_host": "xn--bcher-kva.de"}, map[string]string{"route_host": "xn--bcher-kva.de"}, nil},
		{"300-byte host", map[string]string{"route_host": strings.Repeat("a.", 150)[:299] + "b"}, map[string]string{}, []string{"SERVICE_ROUTE_HOST"}},
		{"wildcard over 253 bytes", map[string]string{"route_host": "*." + name253}, map[string]string{}, []string{"SERVICE_ROUTE_HOST"}},
		{"254-byte host", map[string]string{"route_host": name253 + "b"}, map[string]string{}, []string{"SERVICE_ROUTE_HOST"}},
		{"64-byte label", map[string]string{"route_host": label63 + "a.com"}, map[string]string{}, []string{"SERVICE_ROUTE_HOST"}},
		{"host list over 512 bytes", map[string]string{"route_host": manyHosts(9)}, map[string]string{}, []string{"SERVICE_ROUTE_HOST"}},

		// A bad path or proto would widen the route: all of it goes.
		{"relative path", map[string]string{"route_host": "a.com", "route_path": "api", "route_sticky": "true"}, map[string]string{}, []string{"SERVICE_ROUTE_PATH"}},
		{"path with semicolon", map[string]string{"route_host": "a.com", "route_path": "/a;return 302 http://evil"}, map[string]string{}, []string{"SERVICE_ROUTE_PATH"}},
		{"path with braces", map[string]string{"route_path": "/a{}"}, map[string]string{}, []string{"SERVICE_ROUTE_PATH"}},
		{"path with quote", map[string]string{"route_path": `/a"b`}, map[string]string{}, []string{"SERVICE_ROUTE_PATH"}},
		{"path with newline", map[string]string{"route_path": "/a\nb"}, map[string]string{}, []string{"SERVICE_ROUTE_PATH"}},
		{"path with unicode", map[string]string{"route_path": "/ä"}, map[string]string{}, []string{"SERVICE_ROUTE_PATH"}},
		{"path with query", map[string]string{"route_path": "/a?x=1"}, map[string]string{}, []string{"SERVICE_ROUTE_PATH"}},
		{"path with escape", map[string]string{"route_path": "/a%20b"}, map[string]string{}, []string{"SERVICE_ROUTE_PATH"}},
		{"path with dot-dot", map[string]string{"route_path": "/a/../admin"}, map[string]string{}, []string{"SERVICE_ROUTE_PATH"}},
		{"path with dot", map[string]string{"route_path": "/a/./b"}, map[string]string{}, []string{"SERVICE_ROUTE_PATH"}},
		{"path with an empty segment", map[string]string{"route_path": "/a//b"}, map[string]string{}, []string{"SERVICE_ROUTE_PATH"}},
		{"path of two slashes", map[string]string{"route_path": "//"}, map[string]string{}, []string{"SERVICE_ROUTE_PATH"}},
		{"root and trailing slash", map[string]string{"route_path": "/", "route_health": "/a/"}, map[string]string{"route_path": "/", "route_health": "/a/"}, nil},
		{"128-byte path", map[string]string{"route_path": "/" + strings.Repeat("p", 127)}, map[string]string{"route_path": "/" + strings.Repeat("p", 127)}, nil},
		{"129-byte path", map[string]string{"route_path": "/" + strings.Repeat("p", 128)}, map[string]string{}, []string{"SERVICE_ROUTE_PATH"}},
		{"path with dots in names", map[string]string{"route_path": "/a.b/..c/~u/x_y-z/"}, map[string]string{"route_path": "/a.b/..c/~u/x_y-z/"}, nil},
		{"unknown proto", map[string]string{"route_host": "a.com", "route_proto": "websocket"}, map[string]string{}, []string{"SERVICE_ROUTE_PROTO"}},

		// Other bad values drop only their key.
		{"bad port", map[string]string{"route_proto": "tcp", "route_port": "70000"}, map[string]string{"route_proto": "tcp"}, []string{"SERVICE_ROUTE_PORT"}},
		{"port zero", map[string]string{"route_proto": "tcp", "route_port": "0"}, map[string]string{"route_proto": "tcp"}, []string{"SERVICE_ROUTE_PORT"}},
		{"port not a number", map[string]string{"route_proto": "tcp", "route_port": "1e3"}, map[string]string{"route_proto": "tcp"}, []string{"SERVICE_ROUTE_PORT"}},
		{"port without tcp", map[string]string{"route_host": "a.com", "route_port": "8443"}, map[string]string{"route_host": "a.com"}, []string{"SERVICE_ROUTE_PORT"}},
		{"weight out of range", map[string]string{"route_host": "a.com", "route_weight": "257"}, map[string]string{"route_host": "a.com"}, []string{"SERVICE_ROUTE_WEIGHT"}},
		{"weight zero", map[string]string{"route_weight": "0"}, map[string]string{}, []string{"SERVICE_ROUTE_WEIGHT"}},
		{"weight fraction", map[string]string{"route_weight": "1.5"}, map[string]string{}, []string{"SERVICE_ROUTE_WEIGHT"}},
		{"bad boolean", map[string]string{"route_host": "a.com", "route_strip": "maybe", "route_sticky": "on"},
			map[string]string{"route_host": "a.com", "route_sticky": "true"}, []string{"SERVICE_ROUTE_STRIP"}},
		{"bad health path", map[string]string{"route_host": "a.com", "route_health": "health;"}, map[string]string{"route_host": "a.com"}, []string{"SERVICE_ROUTE_HEALTH"}},
		{"https other than redirect", map[string]string{"route_host": "a.com", "route_https": "true"}, map[string]string{"route_host": "a.com"}, []string{"SERVICE_ROUTE_HTTPS"}},
		{"unknown key (typo)", map[string]string{"route_hots": "a.com", "route_path": "/"}, map[string]string{"route_path": "/"}, []string{"SERVICE_ROUTE_HOTS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := labelled(tt.in)
			got, errs := normalizeRoute(in)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("route = %q, want %q", got, tt.want)
			}
			var keys []string
			for _, e := range errs {
				keys = append(keys, e.Key)
				if v, ok := in[strings.ToLower(strings.TrimPrefix(e.Key, "SERVICE_"))]; !ok || e.Value != v.Raw || e.Reason == "" {
					t.Errorf("rejection %v does not name the value as written", e)
				}
			}
			if !reflect.DeepEqual(keys, tt.errs) {
				t.Errorf("rejections %v, want keys %v", errs, tt.errs)
			}
		})
	}
}

// repeat is n times s.
func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// manyHosts is a valid list of n 63-byte-label names, over 512 bytes for
// n >= 8.
func manyHosts(n int) string {
	var hs []string
	for i := range n {
		hs = append(hs, strings.Repeat(string(rune('a'+i)), 63)+".com")
	}
	return strings.Join(hs, ",")
}

// values drops where route values came from.
func values(in map[string]routeValue) map[string]string {
	out := map[string]string{}
	for k, v := range in {
		out[k] = v.Value
	}
	return out
}

func errKeys(errs []*Error) []string {
	var keys []string
	for _, e := range errs {
		keys = append(keys, e.Key)
	}
	return keys
}

func TestRouteFromTags(t *testing.T) {
	tests := []struct {
		name    string
		tags    []string
		want    map[string]string
		untrans []string // tags reported as not translated
	}{
		{"no urlprefix tags", []string{"web", "v2", "URLPREFIX-/x"}, map[string]string{}, nil},
		{"host and root", []string{"urlprefix-API.example.com/"}, map[string]string{"route_host": "api.example.com", "route_path": "/"}, nil},
		{"path only", []string{"web", "urlprefix-/api"}, map[string]string{"route_path": "/api"}, nil},
		{"strip", []string{"urlprefix-/api strip=/api"}, map[string]string{"route_path": "/api", "route_strip": "true"}, nil},
		{"strip, trailing slash", []string{"urlprefix-a.com/api/ strip=/api"}, map[string]string{"route_host": "a.com", "route_path": "/api/", "route_strip": "true"}, nil},
		{"spaces around", []string{"  urlprefix-  /api   strip=/api  "}, map[string]string{"route_path": "/api", "route_strip": "true"}, nil},
		{"grpc", []string{"urlprefix-g.example.com/ proto=grpc"}, map[string]string{"route_host": "g.example.com", "route_path": "/", "route_proto": "grpc"}, nil},
		{"tcp", []string{"urlprefix-:5432 proto=tcp"}, map[string]string{"route_proto": "tcp", "route_port": "5432"}, nil},
		{"hosts of one path merge", []string{"urlprefix-a.com/x", "urlprefix-b.com/x", "urlprefix-a.com/x"},
			map[string]string{"route_host": "a.com,b.com,a.com", "route_path": "/x"}, nil},
		{"a tag without host covers every host", []string{"urlprefix-a.com/x", "urlprefix-/x"}, map[string]string{"route_path": "/x"}, nil},
		{"second path not translated", []string{"urlprefix-a.com/x", "urlprefix-a.com/y", "urlprefix-b.com/x strip=/x"},
			map[string]string{"route_host": "a.com", "route_path": "/x"}, []string{"urlprefix-a.com/y", "urlprefix-b.com/x strip=/x"}},
		{"second tcp port not translated", []string{"urlprefix-:1 proto=tcp", "urlprefix-:2 proto=tcp"},
			map[string]string{"route_proto": "tcp", "route_port": "1"}, []string{"urlprefix-:2 proto=tcp"}},
		{"strip of another prefix", []string{"urlprefix-/foo/bar strip=/foo"}, map[string]string{}, []string{"urlprefix-/foo/bar strip=/foo"}},
		{"option without equivalent, the next tag is used", []string{"urlprefix-/x allow=ip:10.0.0.0/8", "urlprefix-/y"},
			map[string]string{"route_path": "/y"}, []string{"urlprefix-/x allow=ip:10.0.0.0/8"}},
		{"https upstream", []string{"urlprefix-/x proto=https"}, map[string]string{}, []string{"urlprefix-/x proto=https"}},
		{"fabio's weight", []string{"urlprefix-/x weight=0.1"}, map[string]string{}, []string{"urlprefix-/x weight=0.1"}},
		{"port without proto=tcp", []string{"urlprefix-:1234"}, map[string]string{}, []string{"urlprefix-:1234"}},
		{"proto=tcp on a path", []string{"urlprefix-/x proto=tcp"}, map[string]string{}, []string{"urlprefix-/x proto=tcp"}},
		{"tcp with strip", []string{"urlprefix-:1 proto=tcp strip=/"}, map[string]string{}, []string{"urlprefix-:1 proto=tcp strip=/"}},
		{"TCP+SNI host form", []string{"urlprefix-a.com proto=tcp+sni"}, map[string]string{}, []string{"urlprefix-a.com proto=tcp+sni"}},
		{"host without path", []string{"urlprefix-a.com"}, map[string]string{}, []string{"urlprefix-a.com"}},
		// Translated as written: normalizeRoute rejects what is hostile.
		{"hostile path passed on for checking", []string{"urlprefix-a.com/x;evil{"}, map[string]string{"route_host": "a.com", "route_path": "/x;evil{"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := routeFromTags("SERVICE_TAGS", tt.tags)
			if g := values(got); !reflect.DeepEqual(g, tt.want) {
				t.Errorf("route = %q, want %q", g, tt.want)
			}
			var untrans []string
			for _, e := range errs {
				if e.Key != "SERVICE_TAGS" || !strings.Contains(e.Reason, "not translated") {
					t.Errorf("rejection %v", e)
				}
				untrans = append(untrans, e.Value)
			}
			if !reflect.DeepEqual(untrans, tt.untrans) {
				t.Errorf("not translated %q, want %q", untrans, tt.untrans)
			}
		})
	}
}

func TestRouteFromVirtual(t *testing.T) {
	one := []container.Port{pub(8080, "tcp", "127.0.0.1", 1)}
	two := []container.Port{pub(80, "tcp", "127.0.0.1", 1), pub(8080, "tcp", "127.0.0.1", 2)}
	noEighty := []container.Port{pub(8080, "tcp", "127.0.0.1", 1), pub(9090, "tcp", "127.0.0.1", 2)}
	tcpUDP := []container.Port{pub(53, "tcp", "127.0.0.1", 1), pub(53, "udp", "127.0.0.1", 1)}
	tests := []struct {
		name  string
		env   []string
		ports []container.Port
		port  container.Port
		want  map[string]string
		errs  []string
	}{
		{"no VIRTUAL_HOST", []string{"VIRTUAL_PORT=8080", "VIRTUAL_PATH=/x"}, one, one[0], map[string]string{}, nil},
		{"the only exposed port", []string{"VIRTUAL_HOST=a.com,b.com"}, one, one[0], map[string]string{"route_host": "a.com,b.com"}, nil},
		{"several ports: 80", []string{"VIRTUAL_HOST=a.com"}, two, two[0], map[string]string{"route_host": "a.com"}, nil},
		{"several ports: not 8080", []string{"VIRTUAL_HOST=a.com"}, two, two[1], map[string]string{}, nil},
		{"several ports, no 80: none", []string{"VIRTUAL_HOST=a.com"}, noEighty, noEighty[0], map[string]string{}, nil},
		{"VIRTUAL_PORT", []string{"VIRTUAL_HOST=a.com", "VIRTUAL_PORT=9090"}, noEighty, noEighty[1], map[string]string{"route_host": "a.com"}, nil},
		{"VIRTUAL_PORT elsewhere", []string{"VIRTUAL_HOST=a.com", "VIRTUAL_PORT=9090"}, noEighty, noEighty[0], map[string]string{}, nil},
		{"one port number, two protocols: the TCP one", []string{"VIRTUAL_HOST=a.com"}, tcpUDP, tcpUDP[0], map[string]string{"route_host": "a.com"}, nil},
		{"never UDP", []string{"VIRTUAL_HOST=a.com"}, tcpUDP, tcpUDP[1], map[string]string{}, nil},
		{"bad VIRTUAL_PORT", []string{"VIRTUAL_HOST=a.com", "VIRTUAL_PORT=http"}, one, one[0], map[string]string{}, []string{"VIRTUAL_PORT"}},
		{"path and dest /", []string{"VIRTUAL_HOST=a.com", "VIRTUAL_PATH=/app/", "VIRTUAL_DEST=/"}, one, one[0],
			map[string]string{"route_host": "a.com", "route_path": "/app/", "route_strip": "true"}, nil},
		{"dest elsewhere", []string{"VIRTUAL_HOST=a.com", "VIRTUAL_PATH=/app", "VIRTUAL_DEST=/other"}, one, one[0], map[string]string{}, []string{"VIRTUAL_DEST"}},
		{"grpc", []string{"VIRTUAL_HOST=a.com", "VIRTUAL_PROTO=grpc"}, one, one[0], map[string]string{"route_host": "a.com", "route_proto": "grpc"}, nil},
		{"http", []string{"VIRTUAL_HOST=a.com", "VIRTUAL_PROTO=http"}, one, one[0], map[string]string{"route_host": "a.com"}, nil},
		{"https upstream", []string{"VIRTUAL_HOST=a.com", "VIRTUAL_PROTO=https"}, one, one[0], map[string]string{}, []string{"VIRTUAL_PROTO"}},
		{"fastcgi", []string{"VIRTUAL_HOST=a.com", "VIRTUAL_PROTO=fastcgi"}, one, one[0], map[string]string{}, []string{"VIRTUAL_PROTO"}},
		{"multiports overrides VIRTUAL_HOST", []string{"VIRTUAL_HOST=a.com", "VIRTUAL_HOST_MULTIPORTS={}"}, one, one[0], map[string]string{}, []string{"VIRTUAL_HOST_MULTIPORTS"}},
		{"multiports alone", []string{"VIRTUAL_HOST_MULTIPORTS=a.com: {}"}, one, one[0], map[string]string{}, []string{"VIRTUAL_HOST_MULTIPORTS"}},
		{"hostile host passed on for checking", []string{"VIRTUAL_HOST=a.com;}"}, one, one[0], map[string]string{"route_host": "a.com;}"}, nil},
		{"lower-case name is not nginx-proxy's", []string{"virtual_host=a.com"}, one, one[0], map[string]string{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := routeFromVirtual(virtualEnv(tt.env), tt.ports, tt.port)
			if g := values(got); !reflect.DeepEqual(g, tt.want) {
				t.Errorf("route = %q, want %q", g, tt.want)
			}
			if k := errKeys(errs); !reflect.DeepEqual(k, tt.errs) {
				t.Errorf("rejections %v, want keys %v", errs, tt.errs)
			}
		})
	}
}

// routeMeta is the route_* part of a service's meta.
func routeMeta(s Service) map[string]string {
	out := map[string]string{}
	for k, v := range s.Meta {
		if strings.HasPrefix(k, routePrefix) {
			out[k] = v
		}
	}
	return out
}

func TestRouteFromContainer(t *testing.T) {
	twoPorts := ports(pub(80, "tcp", "127.0.0.1", 1), pub(8080, "tcp", "127.0.0.1", 2))
	tests := []struct {
		name string
		c    container.Container
		want map[string]map[string]string // by service ID
		errs []string
	}{
		{"labels, scoped",
			web(twoPorts, labels("SERVICE_ROUTE_HOST", "A.com", "SERVICE_8080_ROUTE_PATH", "/admin", "SERVICE_8080_ROUTE_HOST", "admin.a.com")),
			map[string]map[string]string{
				"node1:web1:80":   {"route_host": "a.com"},
				"node1:web1:8080": {"route_host": "admin.a.com", "route_path": "/admin"},
			}, nil},
		{"VIRTUAL_* on port 80 only",
			web(twoPorts, env("VIRTUAL_HOST=a.com", "VIRTUAL_PATH=/v")),
			map[string]map[string]string{"node1:web1:80": {"route_host": "a.com", "route_path": "/v"}, "node1:web1:8080": {}}, nil},
		{"labels win over VIRTUAL_* key by key",
			web(env("VIRTUAL_HOST=a.com", "VIRTUAL_PATH=/v"), labels("SERVICE_ROUTE_HOST", "b.com", "SERVICE_ROUTE_WEIGHT", "5", "SERVICE_ROUTE_PATH", " ")),
			map[string]map[string]string{"node1:web1:8080": {"route_host": "b.com", "route_path": "/v", "route_weight": "5"}}, nil},
		{"urlprefix tags: kept as tags, translated",
			web(labels("SERVICE_TAGS", "web,urlprefix-api.example.com/api strip=/api")),
			map[string]map[string]string{"node1:web1:8080": {"route_host": "api.example.com", "route_path": "/api", "route_strip": "true"}}, nil},
		{"labels win over urlprefix tags",
			web(labels("SERVICE_TAGS", "urlprefix-a.com/api", "SERVICE_ROUTE_HOST", "b.com")),
			map[string]map[string]string{"node1:web1:8080": {"route_host": "b.com", "route_path": "/api"}}, nil},
		{"urlprefix tags win over VIRTUAL_*",
			web(env("VIRTUAL_HOST=v.com"), labels("SERVICE_TAGS", "urlprefix-t.com/")),
			map[string]map[string]string{"node1:web1:8080": {"route_host": "t.com", "route_path": "/"}}, []string{"VIRTUAL_HOST"}},
		{"bad port dropped alone",
			web(labels("SERVICE_ROUTE_PROTO", "tcp", "SERVICE_ROUTE_PORT", "99999", "SERVICE_ROUTE_WEIGHT", "3")),
			map[string]map[string]string{"node1:web1:8080": {"route_proto": "tcp", "route_weight": "3"}}, []string{"SERVICE_ROUTE_PORT"}},
		{"hostile VIRTUAL_HOST: registered, not routed",
			web(env("VIRTUAL_HOST=a.com;\n}server{listen 80")),
			map[string]map[string]string{"node1:web1:8080": {}}, []string{"VIRTUAL_HOST"}},
		{"hostile urlprefix path: registered, not routed",
			web(labels("SERVICE_TAGS", `urlprefix-a.com/x";return 200 "pwned`)),
			map[string]map[string]string{"node1:web1:8080": {}}, []string{"SERVICE_TAGS"}},
		{"hostile urlprefix path without spaces: registered, not routed",
			web(labels("SERVICE_TAGS", "urlprefix-a.com/x;evil{")),
			map[string]map[string]string{"node1:web1:8080": {}}, []string{"SERVICE_TAGS"}},
		{"typo",
			web(labels("SERVICE_ROUTE_HOTS", "a.com")),
			map[string]map[string]string{"node1:web1:8080": {}}, []string{"SERVICE_ROUTE_HOTS"}},
		{"VIRTUAL_PORT not registered",
			web(env("VIRTUAL_HOST=a.com", "VIRTUAL_PORT=9000")),
			map[string]map[string]string{"node1:web1:8080": {}}, []string{"VIRTUAL_HOST"}},
		{"default port 80 of several not registered",
			web(ports(pub(8080, "tcp", "127.0.0.1", 1), exposed(80, "tcp")), env("VIRTUAL_HOST=a.com")),
			map[string]map[string]string{"node1:web1:8080": {}}, []string{"VIRTUAL_HOST"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := FromContainer(tt.c, pol)
			have := map[string]map[string]string{}
			for _, s := range got {
				have[s.ID] = routeMeta(s)
			}
			if !reflect.DeepEqual(have, tt.want) {
				t.Errorf("route meta = %q, want %q", have, tt.want)
			}
			var keys []string
			for _, err := range errs {
				var e *Error
				if !errors.As(err, &e) || e.Container != "web1" || e.ContainerID != cid {
					t.Errorf("rejection does not name the container: %v", err)
					continue
				}
				keys = append(keys, e.Key)
			}
			if !reflect.DeepEqual(keys, tt.errs) {
				t.Errorf("rejections %v, want keys %v", errs, tt.errs)
			}
		})
	}
}

func TestRouteTagsKeptAsWritten(t *testing.T) {
	got, _ := FromContainer(web(labels("SERVICE_TAGS", "urlprefix-/api strip=/api,urlprefix-:9000 proto=tcp")), pol)
	if len(got) != 1 || !reflect.DeepEqual(got[0].Tags, []string{"urlprefix-/api strip=/api", "urlprefix-:9000 proto=tcp"}) {
		t.Fatalf("tags changed: %+v", got)
	}
}

// The meta limit must never cut a route in half: route keys go first.
func TestRouteSurvivesMetaLimit(t *testing.T) {
	kv := []string{"SERVICE_ROUTE_HOST", "a.com", "SERVICE_ROUTE_PATH", "/x"}
	for i := range 70 {
		kv = append(kv, "SERVICE_K"+string(rune('a'+i/26))+string(rune('a'+i%26)), "v")
	}
	got, _ := FromContainer(web(labels(kv...)), pol)
	if len(got) != 1 || len(got[0].Meta) != 63 {
		t.Fatalf("want 63 meta pairs, got %+v", got)
	}
	if want := map[string]string{"route_host": "a.com", "route_path": "/x"}; !maps.Equal(routeMeta(got[0]), want) {
		t.Errorf("route meta %v, want %v", routeMeta(got[0]), want)
	}
}
