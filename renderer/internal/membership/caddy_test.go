package membership

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// caddyRP is a reverse_proxy handler as `caddy adapt` writes one: static
// upstreams, and a dynamic srv source when name is not "".
func caddyRP(name string, dials ...string) string {
	ups := make([]string, len(dials))
	for i, d := range dials {
		ups[i] = fmt.Sprintf(`{"dial":%q}`, d)
	}
	dyn := ""
	if name != "" {
		dyn = fmt.Sprintf(`"dynamic_upstreams":{"name":%q,"refresh":100000000,"resolver":{"addresses":["127.0.0.1:8053"]},"source":"srv"},`, name)
	}
	return fmt.Sprintf(`{%s"handler":"reverse_proxy","transport":{"protocol":"http","resolver":{"addresses":["127.0.0.1:8053"]}},"upstreams":[%s]}`,
		dyn, strings.Join(ups, ","))
}

// caddyCfg is an adapted config whose server srv0 has one route per
// handler, each in a subroute as the Caddyfile adapter nests handle
// blocks.
func caddyCfg(handlers ...string) string {
	routes := make([]string, len(handlers))
	for i, h := range handlers {
		routes[i] = fmt.Sprintf(`{"handle":[{"handler":"subroute","routes":[{"handle":[%s]}]}],"match":[{"header_regexp":{"Host":{"pattern":"^s%d\\."}}}]}`, h, i)
	}
	return fmt.Sprintf(`{"admin":{"listen":"127.0.0.1:2019"},"apps":{"http":{"grace_period":5000000000,"servers":{"srv0":{"listen":["127.0.0.1:8080"],"routes":[%s]}}}}}`,
		strings.Join(routes, ","))
}

const (
	caddyWeb = "web.svc.switchyard."
	caddyA1  = "10.0.0.1:80"
	caddyA2  = "10.0.0.2:80"
	caddyA3  = "[fd00::3]:8080"
)

func caddyServersOf(addrs ...string) []Server {
	out := make([]Server, len(addrs))
	for i, a := range addrs {
		out[i] = Server{Addr: a}
	}
	return out
}

func TestCaddyMembership(t *testing.T) {
	api := caddyRP("api.svc.switchyard.", "10.0.1.1:9000")
	cases := []struct {
		name     string
		old, new string
		want     []Pool
	}{
		{"same bytes", caddyCfg(caddyRP(caddyWeb, caddyA1)), caddyCfg(caddyRP(caddyWeb, caddyA1)), nil},
		{"added", caddyCfg(caddyRP(caddyWeb, caddyA1), api), caddyCfg(caddyRP(caddyWeb, caddyA1, caddyA3), api),
			[]Pool{{Name: caddyWeb, Servers: caddyServersOf(caddyA1, caddyA3), Old: caddyServersOf(caddyA1)}}},
		{"removed", caddyCfg(caddyRP(caddyWeb, caddyA1, caddyA2)), caddyCfg(caddyRP(caddyWeb, caddyA2)),
			[]Pool{{Name: caddyWeb, Servers: caddyServersOf(caddyA2), Old: caddyServersOf(caddyA1, caddyA2)}}},
		{"readdressed", caddyCfg(caddyRP(caddyWeb, caddyA1)), caddyCfg(caddyRP(caddyWeb, caddyA2)),
			[]Pool{{Name: caddyWeb, Servers: caddyServersOf(caddyA2), Old: caddyServersOf(caddyA1)}}},
		{"two pools, sorted by name", caddyCfg(caddyRP(caddyWeb, caddyA1), api), caddyCfg(caddyRP(caddyWeb, caddyA2), caddyRP("api.svc.switchyard.", caddyA1)),
			[]Pool{{Name: "api.svc.switchyard.", Servers: caddyServersOf(caddyA1), Old: caddyServersOf("10.0.1.1:9000")},
				{Name: caddyWeb, Servers: caddyServersOf(caddyA2), Old: caddyServersOf(caddyA1)}}},
		{"name without the root dot, in capitals", caddyCfg(caddyRP("WEB.svc.switchyard", caddyA1)), caddyCfg(caddyRP("WEB.svc.switchyard", caddyA2)),
			[]Pool{{Name: caddyWeb, Servers: caddyServersOf(caddyA2), Old: caddyServersOf(caddyA1)}}},
		{
			// Caddy's admin API writes back what it loaded with its own key
			// order and number format: not a change.
			"same config reformatted",
			caddyCfg(caddyRP(caddyWeb, caddyA1)),
			strings.Replace(strings.Replace(caddyCfg(caddyRP(caddyWeb, caddyA1)), "5000000000", "5e+09", 1), `{"admin":{"listen":"127.0.0.1:2019"},`, `{ "admin" : { "listen" : "127.0.0.1:2019" } ,`, 1),
			nil,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := Caddy([]byte(c.old), []byte(c.new))
			if err != nil {
				t.Fatalf("Caddy: %v", err)
			}
			if !reflect.DeepEqual(d.Pools, c.want) {
				t.Errorf("pools:\n got %+v\nwant %+v", d.Pools, c.want)
			}
		})
	}
}

func TestCaddyStructural(t *testing.T) {
	base := caddyCfg(caddyRP(caddyWeb, caddyA1), caddyRP("api.svc.switchyard.", caddyA2))
	cases := []struct {
		name, new, reason string
	}{
		{"route added", caddyCfg(caddyRP(caddyWeb, caddyA1), caddyRP("api.svc.switchyard.", caddyA2), caddyRP("x.svc.switchyard.", caddyA1)), "differs at /apps/http/servers/srv0/routes"},
		{"listen changed", strings.Replace(base, "127.0.0.1:8080", "127.0.0.1:8081", 1), "differs at /apps/http/servers/srv0/listen/0"},
		{"srv name changed", caddyCfg(caddyRP("web2.svc.switchyard.", caddyA1), caddyRP("api.svc.switchyard.", caddyA2)), "dynamic_upstreams/name"},
		{"static upstreams only", "", "has no dynamic srv source"},
		{"emptied", caddyCfg(caddyRP(caddyWeb), caddyRP("api.svc.switchyard.", caddyA2)), "no static upstream"},
		{"host name", caddyCfg(caddyRP(caddyWeb, "web.internal:80"), caddyRP("api.svc.switchyard.", caddyA2)), `dials "web.internal:80", not an IP literal`},
		{"placeholder", caddyCfg(caddyRP(caddyWeb, "{env.UP}:80"), caddyRP("api.svc.switchyard.", caddyA2)), "not an IP literal"},
		{"network prefix", caddyCfg(caddyRP(caddyWeb, "tcp/10.0.0.1:80"), caddyRP("api.svc.switchyard.", caddyA2)), "not an IP literal"},
		{"one name, two member lists", caddyCfg(caddyRP(caddyWeb, caddyA1, caddyA3), caddyRP(caddyWeb, caddyA2)), "ask for it with different upstreams"},
		{"not JSON", "{", "new caddy config is not JSON"},
		{"trailing data", base + "{}", "data after its JSON value"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			old := base
			if c.name == "static upstreams only" {
				old, c.new = caddyCfg(caddyRP("", caddyA1)), caddyCfg(caddyRP("", caddyA2))
			}
			if c.name == "one name, two member lists" {
				old = caddyCfg(caddyRP(caddyWeb, caddyA1), caddyRP(caddyWeb, caddyA1))
			}
			_, err := Caddy([]byte(old), []byte(c.new))
			var s *Structural
			if !errors.As(err, &s) {
				t.Fatalf("Caddy: got %v, want a Structural error", err)
			}
			if !strings.Contains(s.Reason, c.reason) {
				t.Errorf("reason %q does not say %q", s.Reason, c.reason)
			}
		})
	}
}

// TestCaddyPools checks which pools the renderer serves, and that it
// says why it leaves one out.
func TestCaddyPools(t *testing.T) {
	srvSP := `{"dynamic_upstreams":{"name":"svc.x","proto":"tcp","service":"web","resolver":{"addresses":["127.0.0.1:8053"]},"source":"srv"},"handler":"reverse_proxy","upstreams":[{"dial":"10.0.0.9:80"}]}`
	noResolver := `{"dynamic_upstreams":{"name":"nr.x","source":"srv"},"handler":"reverse_proxy","upstreams":[{"dial":"10.0.0.9:80"}]}`
	aSource := `{"dynamic_upstreams":{"name":"a.x","port":"80","source":"a"},"handler":"reverse_proxy","upstreams":[{"dial":"10.0.0.9:80"}]}`
	cfg := caddyCfg(caddyRP(caddyWeb, caddyA1, caddyA3), caddyRP(caddyWeb, caddyA1, caddyA3), caddyRP("bad.x", "h:80"), srvSP, noResolver, aSource, caddyRP("", caddyA2))
	pools, bad, err := CaddyPools([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if p := pools[caddyWeb]; p == nil || !reflect.DeepEqual(p.Servers, caddyServersOf(caddyA1, caddyA3)) || len(p.Paths) != 2 ||
		!reflect.DeepEqual(p.Resolvers, []string{"127.0.0.1:8053"}) {
		t.Errorf("pool %s: %+v", caddyWeb, p)
	}
	if p := pools["_web._tcp.svc.x."]; p == nil || p.Servers[0].Addr != "10.0.0.9:80" {
		t.Errorf("service and proto make the queried name: %+v", pools)
	}
	if len(pools) != 2 {
		t.Errorf("pools: got %d, want 2: %+v", len(pools), pools)
	}
	for name, why := range map[string]string{"bad.x.": "not an IP literal", "nr.x.": "names no resolver"} {
		if !strings.Contains(bad[name], why) {
			t.Errorf("bad[%s] = %q, want it to say %q", name, bad[name], why)
		}
	}
	if _, _, err := CaddyPools([]byte("null x")); err == nil {
		t.Error("CaddyPools accepted trailing data")
	}
}

// FuzzCaddy: whatever the bytes, Caddy does not panic, a config never
// differs from itself, and a Delta names only pools CaddyPools serves.
func FuzzCaddy(f *testing.F) {
	f.Add(caddyCfg(caddyRP(caddyWeb, caddyA1)), caddyCfg(caddyRP(caddyWeb, caddyA2, caddyA3)))
	f.Add(caddyCfg(caddyRP("", caddyA1)), caddyCfg(caddyRP(caddyWeb, caddyA1)))
	f.Add(`{"a":[1,2,{"handler":"reverse_proxy"}]}`, `{"a":[1,2,{"handler":"reverse_proxy","upstreams":7}]}`)
	f.Fuzz(func(t *testing.T, old, new string) {
		if d, err := Caddy([]byte(old), []byte(old)); err != nil && !caddyIsStructural(err) || !d.Empty() {
			t.Fatalf("config differs from itself: %+v %v", d, err)
		}
		d, err := Caddy([]byte(old), []byte(new))
		if err != nil {
			if !caddyIsStructural(err) {
				t.Fatalf("error is not Structural: %v", err)
			}
			return
		}
		pools, _, err := CaddyPools([]byte(new))
		if err != nil {
			t.Fatalf("Caddy accepted what CaddyPools rejects: %v", err)
		}
		for _, p := range d.Pools {
			if pools[p.Name] == nil || !reflect.DeepEqual(pools[p.Name].Servers, p.Servers) {
				t.Fatalf("delta pool %s is not one CaddyPools serves", p.Name)
			}
		}
	})
}

func caddyIsStructural(err error) bool {
	var s *Structural
	return errors.As(err, &s)
}
