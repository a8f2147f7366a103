package membership

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// caddyfileOf is a Caddyfile with a "web" pool (dynamic srv) and a
// "static" proxy without a dynamic source; extra goes into the site.
func caddyfileOf(web, static, extra string) string {
	return `{
	admin 127.0.0.1:2019
}
http://:8080 {
	@web host web.example
	handle @web {
		reverse_proxy @web ` + web + ` {
			dynamic srv web.8080.svc.switchyard. {
				resolvers 127.0.0.1:8053
				refresh 20ms
			}
			# a comment with reverse_proxy 10.0.0.9:1 {
			transport http {
				resolvers 127.0.0.1:8053
			}
		}
	}
	handle /static/* {
		reverse_proxy ` + static + `
	}
` + extra + `}
`
}

func TestCaddyfileUpstreams(t *testing.T) {
	base := caddyfileOf("10.0.0.1:80 10.0.0.2:80", "10.0.1.1:80", "")
	for _, tc := range []struct {
		name string
		new  string
		want map[string][]string // nil: the tokens cannot tell
	}{
		{"equal", base, map[string][]string{}},
		{"member added", caddyfileOf("10.0.0.1:80 10.0.0.2:80 10.0.0.3:80", "10.0.1.1:80", ""),
			map[string][]string{"web.8080.svc.switchyard.": {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}}},
		{"member removed", caddyfileOf("10.0.0.2:80", "10.0.1.1:80", ""),
			map[string][]string{"web.8080.svc.switchyard.": {"10.0.0.2:80"}}},
		{"comment and blanks only", strings.ReplaceAll(base, "\t\t\t# a comment", "\n\n   # another"), map[string][]string{}},
		{"quoted member", caddyfileOf(`"10.0.0.1:80" 10.0.0.5:80`, "10.0.1.1:80", ""),
			map[string][]string{"web.8080.svc.switchyard.": {"10.0.0.1:80", "10.0.0.5:80"}}},
		{"static proxy changed", caddyfileOf("10.0.0.1:80 10.0.0.2:80", "10.0.1.2:80", ""), nil},
		{"route added", caddyfileOf("10.0.0.1:80 10.0.0.2:80", "10.0.1.1:80", "\trespond /health 200\n"), nil},
		{"matcher changed", strings.Replace(base, "reverse_proxy @web", "reverse_proxy @other", 1), nil},
		{"refresh changed", strings.Replace(base, "refresh 20ms", "refresh 50ms", 1), nil},
		{"a token quoted", strings.Replace(base, "refresh 20ms", `refresh "20ms"`, 1), nil},
		{"heredoc", base + "x <<EOF\nEOF\n", nil},
		{"environment placeholder", strings.Replace(base, "refresh 20ms", "refresh {$REFRESH}", 1), nil},
		{"block left open", strings.TrimSuffix(base, "}\n"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := CaddyfileUpstreams([]byte(base), []byte(tc.new))
			if tc.want == nil {
				if why == "" {
					t.Fatalf("read as a membership change %v; want a reason to adapt", got)
				}
				return
			}
			if why != "" || !maps.EqualFunc(got, tc.want, slices.Equal) {
				t.Fatalf("got %v, %q; want %v", got, why, tc.want)
			}
		})
	}
}

// TestCaddyfileUpstreamsPoolForms: a pool the tokens cannot name, or two
// proxies asking for one pool with different members, are left to the
// JSON diff.
func TestCaddyfileUpstreamsPoolForms(t *testing.T) {
	proxy := func(ups, src string) string {
		return "reverse_proxy " + ups + " {\n" + src + "\n}\n"
	}
	named := "dynamic srv Web.Example {\nresolvers 127.0.0.1:8053\n}"
	for _, tc := range []struct {
		name     string
		old, new string
		pool     string // "" when it must not be read from tokens
	}{
		{"name lower-cased and fully qualified", proxy("10.0.0.1:80", named), proxy("10.0.0.2:80", named), "web.example."},
		{"named by its block", proxy("10.0.0.1:80", "dynamic srv {\nname web\n}"), proxy("10.0.0.2:80", "dynamic srv {\nname web\n}"), ""},
		{"a source other than srv", proxy("10.0.0.1:80", "dynamic a web 80"), proxy("10.0.0.2:80", "dynamic a web 80"), ""},
		{"a placeholder name", proxy("10.0.0.1:80", "dynamic srv {env.POOL}"), proxy("10.0.0.2:80", "dynamic srv {env.POOL}"), ""},
		{"to lines", "reverse_proxy {\nto 10.0.0.1:80\n" + named + "\n}\n", "reverse_proxy {\nto 10.0.0.2:80 10.0.0.3:80\n" + named + "\n}\n", "web.example."},
		{"two proxies, one pool, one changed", proxy("10.0.0.1:80", named) + proxy("10.0.0.1:80", named), proxy("10.0.0.2:80", named) + proxy("10.0.0.1:80", named), ""},
		{"two proxies, one pool, both changed", proxy("10.0.0.1:80", named) + proxy("10.0.0.1:80", named), proxy("10.0.0.2:80", named) + proxy("10.0.0.2:80", named), "web.example."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := CaddyfileUpstreams([]byte(tc.old), []byte(tc.new))
			if tc.pool == "" {
				if why == "" {
					t.Fatalf("read as %v; want a reason to adapt", got)
				}
				return
			}
			if why != "" || len(got) != 1 || got[tc.pool] == nil {
				t.Fatalf("got %v, %q; want pool %s", got, why, tc.pool)
			}
		})
	}
}

func TestCaddyfilePoolsAndDelta(t *testing.T) {
	web := &CaddyPool{Name: "web.", Resolvers: []string{"127.0.0.1:8053"}, Servers: []Server{{Addr: "10.0.0.1:80"}}, Paths: []string{"/a"}}
	api := &CaddyPool{Name: "api.", Resolvers: []string{"127.0.0.1:8053"}, Servers: []Server{{Addr: "10.0.0.9:80"}}, Paths: []string{"/b"}}
	base := map[string]*CaddyPool{"web.": web, "api.": api}

	cur, why := CaddyfilePools(base, map[string][]string{"web.": {"10.0.0.2:80", "[::1]:81"}})
	if why != "" {
		t.Fatal(why)
	}
	if cur["api."] != api || cur["web."].Paths[0] != "/a" || web.Servers[0].Addr != "10.0.0.1:80" {
		t.Fatalf("unchanged pools and fields must be the base's, and the base untouched: %+v", cur)
	}
	d := CaddyPoolsDelta(base, cur)
	want := []Server{{Addr: "10.0.0.2:80"}, {Addr: "[::1]:81"}}
	if len(d.Pools) != 1 || d.Pools[0].Name != "web." || !slices.Equal(d.Pools[0].Servers, want) || !slices.Equal(d.Pools[0].Old, web.Servers) {
		t.Fatalf("delta %+v", d)
	}
	for name, changed := range map[string]map[string][]string{
		"a pool the base does not serve": {"other.": {"10.0.0.1:80"}},
		"a host name":                    {"web.": {"backend:80"}},
		"a zone":                         {"web.": {"[fe80::1%eth0]:80"}},
		"no port":                        {"web.": {"10.0.0.1"}},
		"no member":                      {"web.": {}},
	} {
		if _, why := CaddyfilePools(base, changed); why == "" {
			t.Errorf("%s: accepted", name)
		}
	}
}
