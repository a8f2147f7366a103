package membership

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// nginxFile is a config in the shape of the shipped template: one dynamic
// upstream per name in ups (name -> its server lines), an init block, a
// plain upstream and the endpoint.
func nginxFile(extra string, ups ...[2]string) string {
	var b strings.Builder
	b.WriteString("# generated\nevents {}\nhttp {\n  lua_shared_dict switchyard 1m;\n")
	b.WriteString("  init_by_lua_block {\n    local n = #t -- a '}' and a \"#\" in Lua\n    s = \"{ ; }\"\n  }\n")
	b.WriteString("  upstream plain {\n    server 10.9.9.9:80;\n  }\n")
	for _, u := range ups {
		b.WriteString("  upstream " + u[0] + " {\n" + u[1] +
			"    balancer_by_lua_block { switchyard.balance(\"" + u[0] + "\") }\n    keepalive 16;\n  }\n")
		b.WriteString("  server { listen 8080; server_name " + u[0] + ".*; location / { proxy_pass http://" + u[0] + "; } }\n")
	}
	b.WriteString(extra)
	b.WriteString("  server { listen 127.0.0.1:9180; location = /switchyard/upstreams { content_by_lua_block { switchyard.api() } } }\n}\n")
	return b.String()
}

func ngxServers(lines ...string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("    server " + l + ";\n")
	}
	return b.String()
}

func ngxUp(addr string, weight int) Server { return Server{Addr: addr, Weight: weight} }

func TestNginx(t *testing.T) {
	base := nginxFile("", [2]string{"svc_web", ngxServers("10.0.0.1:80", "10.0.0.2:80")}, [2]string{"svc_api", ngxServers("10.0.1.1:9000")})
	for _, tc := range []struct {
		name       string
		new        string
		want       []Pool // nil with structural false: empty Delta
		structural string // a substring of the reason; "" = not structural
	}{
		{name: "same bytes", new: base},
		{name: "comments and white space only",
			new: strings.ReplaceAll(strings.Replace(base, "# generated", "# generated again\n# 2 skipped", 1), "  upstream ", "\tupstream  ")},
		// Lua is compared byte for byte: even its white space reloads.
		{name: "white space in Lua", structural: "init_by_lua_block",
			new: strings.Replace(base, "local n", "local  n", 1)},
		{name: "server added",
			new: nginxFile("", [2]string{"svc_web", ngxServers("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")}, [2]string{"svc_api", ngxServers("10.0.1.1:9000")}),
			want: []Pool{{Name: "svc_web", Servers: []Server{ngxUp("10.0.0.1:80", 0), ngxUp("10.0.0.2:80", 0), ngxUp("10.0.0.3:80", 0)},
				Old: []Server{ngxUp("10.0.0.1:80", 0), ngxUp("10.0.0.2:80", 0)}}}},
		{name: "server removed, other pool re-weighted and one down",
			new: nginxFile("", [2]string{"svc_web", ngxServers("10.0.0.2:80")}, [2]string{"svc_api", ngxServers("10.0.1.1:9000 weight=3", "[fd00::1]:9000 down")}),
			want: []Pool{
				{Name: "svc_web", Servers: []Server{ngxUp("10.0.0.2:80", 0)}, Old: []Server{ngxUp("10.0.0.1:80", 0), ngxUp("10.0.0.2:80", 0)}},
				{Name: "svc_api", Servers: []Server{ngxUp("10.0.1.1:9000", 3), {Addr: "[fd00::1]:9000", Down: true}},
					Old: []Server{ngxUp("10.0.1.1:9000", 0)}},
			}},
		{name: "address without a port is port 80",
			new: nginxFile("", [2]string{"svc_web", ngxServers("10.0.0.1", "10.0.0.2:80")}, [2]string{"svc_api", ngxServers("10.0.1.1:9000")}),
			want: []Pool{{Name: "svc_web", Servers: []Server{ngxUp("10.0.0.1:80", 0), ngxUp("10.0.0.2:80", 0)},
				Old: []Server{ngxUp("10.0.0.1:80", 0), ngxUp("10.0.0.2:80", 0)}}}},
		{name: "new upstream", structural: "directive",
			new: nginxFile("", [2]string{"svc_web", ngxServers("10.0.0.1:80", "10.0.0.2:80")}, [2]string{"svc_api", ngxServers("10.0.1.1:9000")}, [2]string{"svc_new", ngxServers("10.0.2.1:80")})},
		{name: "upstream removed", structural: "directive",
			new: nginxFile("", [2]string{"svc_web", ngxServers("10.0.0.1:80", "10.0.0.2:80")})},
		{name: "server of a plain upstream", structural: "10.9.9.8",
			new: strings.Replace(base, "10.9.9.9:80", "10.9.9.8:80", 1)},
		{name: "other directive", structural: "keepalive",
			new: strings.Replace(base, "keepalive 16", "keepalive 32", 1)},
		{name: "Lua code", structural: "init_by_lua_block",
			new: strings.Replace(base, `s = "{ ; }"`, `s = "{ ;; }"`, 1)},
		{name: "backup", structural: `"backup"`,
			new: nginxFile("", [2]string{"svc_web", ngxServers("10.0.0.1:80", "10.0.0.2:80 backup")}, [2]string{"svc_api", ngxServers("10.0.1.1:9000")})},
		{name: "max_conns", structural: "max_conns",
			new: nginxFile("", [2]string{"svc_web", ngxServers("10.0.0.1:80 max_conns=5", "10.0.0.2:80")}, [2]string{"svc_api", ngxServers("10.0.1.1:9000")})},
		{name: "host name", structural: "literal IP",
			new: nginxFile("", [2]string{"svc_web", ngxServers("web.example:80", "10.0.0.2:80")}, [2]string{"svc_api", ngxServers("10.0.1.1:9000")})},
		{name: "unix socket", structural: "literal IP",
			new: nginxFile("", [2]string{"svc_web", ngxServers("unix:/run/web.sock", "10.0.0.2:80")}, [2]string{"svc_api", ngxServers("10.0.1.1:9000")})},
		{name: "IPv6 without brackets", structural: "literal IP",
			new: nginxFile("", [2]string{"svc_web", ngxServers("fd00::1", "10.0.0.2:80")}, [2]string{"svc_api", ngxServers("10.0.1.1:9000")})},
		{name: "port 0", structural: "port",
			new: nginxFile("", [2]string{"svc_web", ngxServers("10.0.0.1:0", "10.0.0.2:80")}, [2]string{"svc_api", ngxServers("10.0.1.1:9000")})},
		{name: "weight 0", structural: "weight",
			new: nginxFile("", [2]string{"svc_web", ngxServers("10.0.0.1:80 weight=0", "10.0.0.2:80")}, [2]string{"svc_api", ngxServers("10.0.1.1:9000")})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Nginx([]byte(base), []byte(tc.new))
			var s *Structural
			if tc.structural != "" {
				if !errors.As(err, &s) || !strings.Contains(s.Reason, tc.structural) {
					t.Fatalf("got %+v, %v; want structural naming %q", d, err, tc.structural)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(d.Pools, tc.want) {
				t.Errorf("got %+v\nwant %+v", d.Pools, tc.want)
			}
		})
	}
}

// Only switchyard.balance with the upstream's own name makes an upstream
// dynamic: any other Lua balancer is the operator's, and its servers
// reload.
func TestNginxBalancerContract(t *testing.T) {
	for _, tc := range []struct {
		name, block string
		dynamic     bool
	}{
		{"shipped", `switchyard.balance("u")`, true},
		{"single quotes, return and semicolon", ` return switchyard.balance( 'u' ); `, true},
		{"another upstream's name", `switchyard.balance("v")`, false},
		{"own Lua", `require("my").balance()`, false},
		{"more code", `ngx.log(ngx.ERR, "x") switchyard.balance("u")`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := func(addr string) []byte {
				return []byte("http { upstream u { server " + addr + "; balancer_by_lua_block {" + tc.block + "} } }")
			}
			d, err := Nginx(conf("10.0.0.1:80"), conf("10.0.0.2:80"))
			var s *Structural
			if tc.dynamic && (err != nil || len(d.Pools) != 1) {
				t.Errorf("not applied at runtime: %+v %v", d, err)
			}
			if !tc.dynamic && !errors.As(err, &s) {
				t.Errorf("got %+v %v, want structural", d, err)
			}
		})
	}
	stream := []byte("stream { upstream u { server 10.0.0.1:80; balancer_by_lua_block { switchyard.balance(\"u\") } } }")
	if _, err := Nginx(stream, []byte(strings.Replace(string(stream), "10.0.0.1", "10.0.0.2", 1))); err == nil {
		t.Error("a stream upstream was taken as dynamic: the endpoint feeds the http Lua VM only")
	}
}

func TestNginxDiffPassiveHealth(t *testing.T) {
	conf := func(params string) []byte {
		return []byte("http { upstream u { server 10.0.0.1:80" + params + "; balancer_by_lua_block { switchyard.balance(\"u\") } } }")
	}
	for params, want := range map[string]NginxServer{
		" max_fails=3 fail_timeout=5s":             {Server: ngxUp("10.0.0.1:80", 0), MaxFails: 3, FailTimeout: 5 * time.Second},
		" fail_timeout=30":                         {Server: ngxUp("10.0.0.1:80", 0), MaxFails: 1, FailTimeout: 30 * time.Second},
		" max_fails=0 fail_timeout=1m30s weight=2": {Server: ngxUp("10.0.0.1:80", 2), MaxFails: 0, FailTimeout: 90 * time.Second},
		" fail_timeout=500ms":                      {Server: ngxUp("10.0.0.1:80", 0), MaxFails: 1, FailTimeout: 500 * time.Millisecond},
	} {
		pools, err := NginxDiff(conf(""), conf(params))
		if err != nil || len(pools) != 1 || !reflect.DeepEqual(pools[0].Servers, []NginxServer{want}) {
			t.Errorf("%q: %+v %v, want %+v", params, pools, err, want)
		}
		if pools[0].Old[0].MaxFails != 1 || pools[0].Old[0].FailTimeout != 10*time.Second {
			t.Errorf("nginx's defaults: %+v", pools[0].Old[0])
		}
	}
	if _, err := NginxDiff(conf(""), conf(" fail_timeout=1.5s")); err == nil {
		t.Error("a time nginx does not read was taken")
	}
}

// FuzzNginx: any pair of inputs gives a Delta or a Structural, never a
// panic, and a file compared with itself is always an empty Delta.
func FuzzNginx(f *testing.F) {
	base := nginxFile("", [2]string{"svc_web", ngxServers("10.0.0.1:80", "10.0.0.2:80")})
	f.Add([]byte(base), []byte(strings.Replace(base, "10.0.0.2", "10.0.0.3", 1)))
	f.Add([]byte("upstream u { server x; balancer_by_lua_block { switchyard.balance(\"u\") "), []byte("}}}{{"))
	f.Fuzz(func(t *testing.T, old, new []byte) {
		if d, err := Nginx(old, old); err != nil || !d.Empty() {
			t.Fatalf("a file against itself: %+v %v", d, err)
		}
		_, err := Nginx(old, new)
		var s *Structural
		if err != nil && !errors.As(err, &s) {
			t.Fatalf("not a Structural: %v", err)
		}
	})
}
