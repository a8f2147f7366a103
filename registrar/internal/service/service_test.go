package service

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/registrar/internal/container"
)

const cid = "0123456789abcdef0123456789abcdef"

// web is a running bridge container publishing 8080/tcp on 127.0.0.1:32768.
func web(mods ...func(*container.Container)) container.Container {
	c := container.Container{
		ID:          cid,
		Name:        "web1",
		Image:       "reg:5000/team/webapp:1.2",
		State:       container.State{Running: true},
		NetworkMode: "bridge",
		Networks:    []container.Network{{Name: "bridge", IP: "172.17.0.2"}},
		Ports: []container.Port{
			{Port: 8080, Proto: "tcp", Bindings: []container.Binding{{HostIP: "127.0.0.1", HostPort: 32768}}},
		},
	}
	for _, m := range mods {
		m(&c)
	}
	return c
}

func labels(kv ...string) func(*container.Container) {
	return func(c *container.Container) {
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			c.Labels[kv[i]] = kv[i+1]
		}
	}
}

func env(kv ...string) func(*container.Container) {
	return func(c *container.Container) { c.Env = append(c.Env, kv...) }
}

func ports(ps ...container.Port) func(*container.Container) {
	return func(c *container.Container) { c.Ports = ps }
}

func pub(port int, proto, hostIP string, hostPort int) container.Port {
	return container.Port{Port: port, Proto: proto, Bindings: []container.Binding{{HostIP: hostIP, HostPort: hostPort}}}
}

func exposed(port int, proto string) container.Port {
	return container.Port{Port: port, Proto: proto}
}

var pol = Policy{Node: "node1", DefaultIP: "10.0.0.9"}

// short is a service without ownership meta and with the fields a table
// cares about.
type short struct {
	ID, Name, Addr string
	Port           int
	Tags           []string
}

func summarize(ss []Service) []short {
	var out []short
	for _, s := range ss {
		out = append(out, short{s.ID, s.Name, s.Address, s.Port, s.Tags})
	}
	return out
}

func TestFromContainerNamesIDsAddresses(t *testing.T) {
	tests := []struct {
		name string
		c    container.Container
		p    Policy
		want []short
	}{
		{"walking skeleton: 127.0.0.1 binding, image base name, default ID",
			web(), pol,
			[]short{{"node1:web1:8080", "webapp", "127.0.0.1", 32768, nil}}},
		{"SERVICE_NAME label",
			web(labels("SERVICE_NAME", "api")), pol,
			[]short{{"node1:web1:8080", "api", "127.0.0.1", 32768, nil}}},
		{"SERVICE_NAME env",
			web(env("SERVICE_NAME=api")), pol,
			[]short{{"node1:web1:8080", "api", "127.0.0.1", 32768, nil}}},
		{"label wins over env",
			web(env("SERVICE_NAME=fromenv"), labels("SERVICE_NAME", "fromlabel")), pol,
			[]short{{"node1:web1:8080", "fromlabel", "127.0.0.1", 32768, nil}}},
		{"key after prefix is case-insensitive",
			web(labels("SERVICE_Name", "api")), pol,
			[]short{{"node1:web1:8080", "api", "127.0.0.1", 32768, nil}}},
		{"lower-case prefix is not ours",
			web(labels("service_name", "api")), pol,
			[]short{{"node1:web1:8080", "webapp", "127.0.0.1", 32768, nil}}},
		{"digest image name",
			web(func(c *container.Container) { c.Image = "reg:5000/team/webapp@sha256:abcdef" }), pol,
			[]short{{"node1:web1:8080", "webapp", "127.0.0.1", 32768, nil}}},
		{"wildcard binding uses --ip",
			web(ports(pub(8080, "tcp", "0.0.0.0", 32768))), Policy{Node: "node1", HostIP: "192.168.1.5", DefaultIP: "10.0.0.9"},
			[]short{{"node1:web1:8080", "webapp", "192.168.1.5", 32768, nil}}},
		{"wildcard binding without --ip uses the host address",
			web(ports(pub(8080, "tcp", "0.0.0.0", 32768))), pol,
			[]short{{"node1:web1:8080", "webapp", "10.0.0.9", 32768, nil}}},
		{"IPv6 wildcard binding",
			web(ports(pub(8080, "tcp", "::", 32768))), pol,
			[]short{{"node1:web1:8080", "webapp", "10.0.0.9", 32768, nil}}},
		{"0.0.0.0 and :: bindings: IPv4 chosen",
			web(ports(container.Port{Port: 8080, Proto: "tcp", Bindings: []container.Binding{{HostIP: "::", HostPort: 32768}, {HostIP: "0.0.0.0", HostPort: 32768}}})), Policy{Node: "node1", HostIP: "192.168.1.5"},
			[]short{{"node1:web1:8080", "webapp", "192.168.1.5", 32768, nil}}},
		{"specific IPv6 binding",
			web(ports(pub(8080, "tcp", "fd00::5", 32768))), pol,
			[]short{{"node1:web1:8080", "webapp", "fd00::5", 32768, nil}}},
		{"specific binding IP beats --ip (the port is not reachable elsewhere)",
			web(), Policy{Node: "node1", HostIP: "192.168.1.5"},
			[]short{{"node1:web1:8080", "webapp", "127.0.0.1", 32768, nil}}},
		{"unpublished port skipped without --internal",
			web(ports(exposed(8080, "tcp"))), pol, nil},
		{"--internal: container IP and container port",
			web(ports(exposed(8080, "tcp"))), Policy{Node: "node1", Internal: true},
			[]short{{"node1:web1:8080", "webapp", "172.17.0.2", 8080, nil}}},
		{"--internal on a published port still pairs container IP with container port",
			web(), Policy{Node: "node1", Internal: true},
			[]short{{"node1:web1:8080", "webapp", "172.17.0.2", 8080, nil}}},
		{"--internal on a user network: network of the network mode",
			web(func(c *container.Container) {
				c.NetworkMode = "front"
				c.Networks = []container.Network{{Name: "back", IP: "10.1.0.2"}, {Name: "front", IP: "10.2.0.2"}}
			}), Policy{Node: "node1", Internal: true},
			[]short{{"node1:web1:8080", "webapp", "10.2.0.2", 8080, nil}}},
		{"--internal with several networks: SERVICE_NETWORK decides",
			web(labels("SERVICE_NETWORK", "back"), func(c *container.Container) {
				c.NetworkMode = "front"
				c.Networks = []container.Network{{Name: "back", IP: "10.1.0.2"}, {Name: "front", IP: "10.2.0.2"}}
			}), Policy{Node: "node1", Internal: true},
			[]short{{"node1:web1:8080", "webapp", "10.1.0.2", 8080, nil}}},
		{"--internal: SERVICE_<port>_NETWORK beats SERVICE_NETWORK",
			web(labels("SERVICE_NETWORK", "back", "SERVICE_8080_NETWORK", "front"), func(c *container.Container) {
				c.NetworkMode = "front"
				c.Networks = []container.Network{{Name: "back", IP: "10.1.0.2"}, {Name: "front", IP: "10.2.0.2"}}
			}), Policy{Node: "node1", Internal: true},
			[]short{{"node1:web1:8080", "webapp", "10.2.0.2", 8080, nil}}},
		{"--internal: no mode network, no bridge: first by name",
			web(func(c *container.Container) {
				c.NetworkMode = "default"
				c.Networks = []container.Network{{Name: "zeta", IP: "10.9.0.2"}, {Name: "alpha", IP: "10.1.0.2"}}
			}), Policy{Node: "node1", Internal: true},
			[]short{{"node1:web1:8080", "webapp", "10.1.0.2", 8080, nil}}},
		{"--internal: IPv6-only network",
			web(func(c *container.Container) {
				c.Networks = []container.Network{{Name: "bridge", IPv6: "fd00::2"}}
			}), Policy{Node: "node1", Internal: true},
			[]short{{"node1:web1:8080", "webapp", "fd00::2", 8080, nil}}},
		{"user network without --internal: host binding, never container IP",
			web(func(c *container.Container) {
				c.NetworkMode = "front"
				c.Networks = []container.Network{{Name: "front", IP: "10.2.0.2"}}
			}, ports(pub(8080, "tcp", "0.0.0.0", 32768))), pol,
			[]short{{"node1:web1:8080", "webapp", "10.0.0.9", 32768, nil}}},
		{"host networking: exposed ports on the host address",
			web(func(c *container.Container) {
				c.NetworkMode, c.HostNetwork, c.Networks = "host", true, []container.Network{{Name: "host"}}
			}, ports(exposed(8080, "tcp"))), pol,
			[]short{{"node1:web1:8080", "webapp", "10.0.0.9", 8080, nil}}},
		{"host networking with --ip",
			web(func(c *container.Container) {
				c.NetworkMode, c.HostNetwork = "host", true
			}, ports(exposed(8080, "tcp"))), Policy{Node: "node1", HostIP: "192.168.1.5", DefaultIP: "10.0.0.9"},
			[]short{{"node1:web1:8080", "webapp", "192.168.1.5", 8080, nil}}},
		{"host networking with --internal: still the host address",
			web(func(c *container.Container) {
				c.NetworkMode, c.HostNetwork, c.Networks = "host", true, nil
			}, ports(exposed(8080, "tcp"))), Policy{Node: "node1", Internal: true, DefaultIP: "10.0.0.9"},
			[]short{{"node1:web1:8080", "webapp", "10.0.0.9", 8080, nil}}},
		{"container:<id> network: the target's IP with the container port",
			web(func(c *container.Container) {
				c.NetworkMode = "container:abc"
				c.Networks = []container.Network{{Name: "bridge", IP: "172.17.0.7"}}
			}, ports(exposed(8080, "tcp"))), pol,
			[]short{{"node1:web1:8080", "webapp", "172.17.0.7", 8080, nil}}},
		{"container:<id> on a host-network target",
			web(func(c *container.Container) {
				c.NetworkMode, c.HostNetwork, c.Networks = "container:abc", true, nil
			}, ports(exposed(8080, "tcp"))), pol,
			[]short{{"node1:web1:8080", "webapp", "10.0.0.9", 8080, nil}}},
		{"SERVICE_IP overrides the binding, keeps the host port",
			web(labels("SERVICE_IP", "192.168.7.7")), pol,
			[]short{{"node1:web1:8080", "webapp", "192.168.7.7", 32768, nil}}},
		{"SERVICE_IP with --internal keeps the container port",
			web(labels("SERVICE_IP", "192.168.7.7")), Policy{Node: "node1", Internal: true},
			[]short{{"node1:web1:8080", "webapp", "192.168.7.7", 8080, nil}}},
		{"--useIpFromLabel strips the cidr",
			web(labels("io.rancher.container.ip", "10.42.1.2/16")), Policy{Node: "node1", IPFromLabel: "io.rancher.container.ip"},
			[]short{{"node1:web1:8080", "webapp", "10.42.1.2", 32768, nil}}},
		{"--useIpFromLabel without the label falls back",
			web(), Policy{Node: "node1", IPFromLabel: "io.rancher.container.ip"},
			[]short{{"node1:web1:8080", "webapp", "127.0.0.1", 32768, nil}}},
		{"multi-port: -<port> suffix on default names",
			web(ports(pub(80, "tcp", "127.0.0.1", 1080), pub(443, "tcp", "127.0.0.1", 1443))), pol,
			[]short{
				{"node1:web1:443", "webapp-443", "127.0.0.1", 1443, nil},
				{"node1:web1:80", "webapp-80", "127.0.0.1", 1080, nil},
			}},
		{"multi-port: generic SERVICE_NAME gets the suffix, SERVICE_<port>_NAME does not",
			web(labels("SERVICE_NAME", "site", "SERVICE_443_NAME", "secure"), ports(pub(80, "tcp", "127.0.0.1", 1080), pub(443, "tcp", "127.0.0.1", 1443))), pol,
			[]short{
				{"node1:web1:443", "secure", "127.0.0.1", 1443, nil},
				{"node1:web1:80", "site-80", "127.0.0.1", 1080, nil},
			}},
		{"udp port: :udp suffix on the default ID",
			web(ports(pub(53, "udp", "127.0.0.1", 1053))), pol,
			[]short{{"node1:web1:53:udp", "webapp", "127.0.0.1", 1053, nil}}},
		{"same port on tcp and udp: SERVICE_<port>_<proto>_NAME",
			web(labels("SERVICE_53_TCP_NAME", "dns-tcp", "SERVICE_53_UDP_NAME", "dns"), ports(pub(53, "tcp", "127.0.0.1", 1053), pub(53, "udp", "127.0.0.1", 1053))), pol,
			[]short{
				{"node1:web1:53", "dns-tcp", "127.0.0.1", 1053, nil},
				{"node1:web1:53:udp", "dns", "127.0.0.1", 1053, nil},
			}},
		{"port+proto beats port beats generic",
			web(labels("SERVICE_NAME", "a", "SERVICE_8080_NAME", "b", "SERVICE_8080_TCP_NAME", "c")), pol,
			[]short{{"node1:web1:8080", "c", "127.0.0.1", 32768, nil}}},
		{"SERVICE_<port>_* of another port does not apply",
			web(labels("SERVICE_9999_NAME", "other")), pol,
			[]short{{"node1:web1:8080", "webapp", "127.0.0.1", 32768, nil}}},
		{"custom ID",
			web(labels("SERVICE_ID", "my-id")), pol,
			[]short{{"my-id", "webapp", "127.0.0.1", 32768, nil}}},
		{"custom ID keeps :udp",
			web(labels("SERVICE_53_ID", "dns1"), ports(pub(53, "udp", "127.0.0.1", 1053))), pol,
			[]short{{"dns1:udp", "webapp", "127.0.0.1", 1053, nil}}},
		{"generic custom ID on several ports gets :<port>",
			web(labels("SERVICE_ID", "x"), ports(pub(80, "tcp", "127.0.0.1", 1080), pub(443, "tcp", "127.0.0.1", 1443))), pol,
			[]short{
				{"x:443", "webapp-443", "127.0.0.1", 1443, nil},
				{"x:80", "webapp-80", "127.0.0.1", 1080, nil},
			}},
		{"tags keep the user's order, \\, escapes, --tags appended",
			web(labels("SERVICE_TAGS", `b,a,x\,y, c ,,`)), Policy{Node: "node1", ForceTags: mustTags(t, "z,a")},
			[]short{{"node1:web1:8080", "webapp", "127.0.0.1", 32768, []string{"b", "a", "x,y", "c", "z"}}}},
		{"--tags template over inspect data",
			web(func(c *container.Container) { c.Inspect = map[string]any{"Name": "/web1"} }), Policy{Node: "node1", ForceTags: mustTags(t, "from={{.Name}}")},
			[]short{{"node1:web1:8080", "webapp", "127.0.0.1", 32768, []string{"from=/web1"}}}},
		{"SERVICE_IGNORE=true",
			web(labels("SERVICE_IGNORE", "true")), pol, nil},
		{"SERVICE_IGNORE=false registers (registrator would not)",
			web(labels("SERVICE_IGNORE", "false")), pol,
			[]short{{"node1:web1:8080", "webapp", "127.0.0.1", 32768, nil}}},
		{"SERVICE_IGNORE=0",
			web(labels("SERVICE_IGNORE", "0")), pol,
			[]short{{"node1:web1:8080", "webapp", "127.0.0.1", 32768, nil}}},
		{"SERVICE_IGNORE=whatever ignores like registrator",
			web(labels("SERVICE_IGNORE", "whatever")), pol, nil},
		{"SERVICE_<port>_IGNORE skips one port, the group name stays",
			web(labels("SERVICE_443_IGNORE", "yes"), ports(pub(80, "tcp", "127.0.0.1", 1080), pub(443, "tcp", "127.0.0.1", 1443))), pol,
			[]short{{"node1:web1:80", "webapp-80", "127.0.0.1", 1080, nil}}},
		{"SERVICE_<port>_IGNORE=false beats SERVICE_IGNORE=true",
			web(labels("SERVICE_IGNORE", "true", "SERVICE_8080_IGNORE", "false")), pol,
			[]short{{"node1:web1:8080", "webapp", "127.0.0.1", 32768, nil}}},
		{"--explicit without a name: nothing",
			web(), Policy{Node: "node1", Explicit: true}, nil},
		{"--explicit with SERVICE_NAME",
			web(labels("SERVICE_NAME", "api")), Policy{Node: "node1", Explicit: true},
			[]short{{"node1:web1:8080", "api", "127.0.0.1", 32768, nil}}},
		{"--explicit with only SERVICE_<port>_NAME: that port only",
			web(labels("SERVICE_80_NAME", "api"), ports(pub(80, "tcp", "127.0.0.1", 1080), pub(443, "tcp", "127.0.0.1", 1443))), Policy{Node: "node1", Explicit: true},
			[]short{{"node1:web1:80", "api", "127.0.0.1", 1080, nil}}},
		{"stopped container: nothing",
			web(func(c *container.Container) { c.State = container.State{ExitCode: 1} }), pol, nil},
		{"paused container: nothing",
			web(func(c *container.Container) { c.State = container.State{Paused: true} }), pol, nil},
		{"bad name rejected",
			web(labels("SERVICE_NAME", "a b{;}")), pol, nil},
		{"ID with a slash rejected",
			web(labels("SERVICE_ID", "a/b")), pol, nil},
		{"SERVICE_NETWORK naming a foreign network rejects the service",
			web(labels("SERVICE_NETWORK", "nope")), Policy{Node: "node1", Internal: true}, nil},
		{"bad SERVICE_IP rejects the service",
			web(labels("SERVICE_IP", "not-an-ip")), pol, nil},
		{"wildcard binding, no --ip, unknown host address: rejected",
			web(ports(pub(8080, "tcp", "0.0.0.0", 32768))), Policy{Node: "node1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := FromContainer(tt.c, tt.p)
			if s := summarize(got); !reflect.DeepEqual(s, tt.want) {
				t.Errorf("got  %+v\nwant %+v", s, tt.want)
			}
			for _, s := range got {
				if s.Meta[MetaNode] != tt.p.Node || s.Meta[MetaContainerID] != cid || s.ContainerID != cid {
					t.Errorf("ownership meta missing: %v", s.Meta)
				}
			}
		})
	}
}

func mustTags(t *testing.T, s string) *templateT {
	t.Helper()
	tmpl, err := ParseForceTags(s)
	if err != nil {
		t.Fatal(err)
	}
	return tmpl
}

func TestMeta(t *testing.T) {
	long := strings.Repeat("v", 513)
	c := web(
		env("SERVICE_VERSION=1", "SERVICE_REGION=env"),
		labels(
			"SERVICE_REGION", "label",
			"SERVICE_8080_PROTO", "h2",
			"SERVICE_BAD.KEY", "x",
			"SERVICE_CONSUL-X", "x",
			"SERVICE_REGISTRAR-NODE", "evil",
			"SERVICE_LONG", long,
			"SERVICE_CHECK_HTTP", "/health",
			"SERVICE_TAGS", "t",
			"SERVICE_NAME", "api",
		))
	got, errs := FromContainer(c, pol)
	if len(got) != 1 {
		t.Fatalf("want 1 service despite bad keys, got %d (errs %v)", len(got), errs)
	}
	want := map[string]string{
		MetaNode: "node1", MetaContainerID: cid,
		"version": "1", "region": "label", "proto": "h2",
	}
	if !reflect.DeepEqual(got[0].Meta, want) {
		t.Errorf("meta = %v, want %v", got[0].Meta, want)
	}
	wantRejected := []string{"SERVICE_BAD.KEY", "SERVICE_CONSUL-X", "SERVICE_REGISTRAR-NODE", "SERVICE_LONG"}
	for _, k := range wantRejected {
		if !hasErr(errs, k) {
			t.Errorf("no rejection naming %s in %v", k, errs)
		}
	}
	for _, err := range errs {
		var e *Error
		if !errors.As(err, &e) || e.Container != "web1" || e.ContainerID != cid {
			t.Errorf("rejection does not name the container: %v", err)
		}
	}
}

func TestMetaLimit(t *testing.T) {
	var kv []string
	for i := range 70 {
		kv = append(kv, "SERVICE_K"+string(rune('a'+i/26))+string(rune('a'+i%26)), "v")
	}
	got, errs := FromContainer(web(labels(kv...)), pol)
	if len(got) != 1 || len(got[0].Meta) != 63 {
		t.Fatalf("want 1 service with 63 meta pairs (+1 fingerprint = 64), got %d services, %d meta", len(got), len(got[0].Meta))
	}
	if len(errs) != 9 {
		t.Errorf("want 9 rejections, got %d: %v", len(errs), errs)
	}
}

func hasErr(errs []error, key string) bool {
	for _, err := range errs {
		var e *Error
		if errors.As(err, &e) && e.Key == key {
			return true
		}
	}
	return false
}

func TestChecks(t *testing.T) {
	tests := []struct {
		name   string
		labels []string
		want   *Check
		noSvc  bool   // the service is dropped
		errKey string // a rejection naming this key
	}{
		{"none", nil, nil, false, ""},
		{"http", []string{"SERVICE_CHECK_HTTP", "/health"},
			&Check{HTTP: "http://127.0.0.1:32768/health", Interval: 10 * time.Second}, false, ""},
		{"http without leading slash", []string{"SERVICE_CHECK_HTTP", "health"},
			&Check{HTTP: "http://127.0.0.1:32768/health", Interval: 10 * time.Second}, false, ""},
		{"https with method, timeout, interval, skip verify", []string{
			"SERVICE_CHECK_HTTPS", "/h", "SERVICE_CHECK_HTTP_METHOD", "head", "SERVICE_CHECK_TIMEOUT", "2s",
			"SERVICE_CHECK_INTERVAL", "5s", "SERVICE_CHECK_TLS_SKIP_VERIFY", "true"},
			&Check{HTTP: "https://127.0.0.1:32768/h", Method: "HEAD", Timeout: 2 * time.Second, Interval: 5 * time.Second, TLSSkipVerify: true}, false, ""},
		{"tcp", []string{"SERVICE_CHECK_TCP", "true"},
			&Check{TCP: "127.0.0.1:32768", Interval: 10 * time.Second}, false, ""},
		{"tcp=false is no check", []string{"SERVICE_CHECK_TCP", "false"}, nil, false, ""},
		{"grpc", []string{"SERVICE_CHECK_GRPC", "true", "SERVICE_CHECK_GRPC_USE_TLS", "1"},
			&Check{GRPC: "127.0.0.1:32768", GRPCUseTLS: true, Interval: 10 * time.Second}, false, ""},
		{"grpc with a service name", []string{"SERVICE_CHECK_GRPC", "health.v1"},
			&Check{GRPC: "127.0.0.1:32768/health.v1", Interval: 10 * time.Second}, false, ""},
		{"ttl has no interval", []string{"SERVICE_CHECK_TTL", "30s"},
			&Check{TTL: 30 * time.Second}, false, ""},
		{"script is argv, no shell, with $SERVICE_IP/$SERVICE_PORT", []string{"SERVICE_CHECK_SCRIPT", `/bin/check --addr "$SERVICE_IP:$SERVICE_PORT" 'a b'`},
			&Check{Args: []string{"/bin/check", "--addr", "127.0.0.1:32768", "a b"}, Interval: 10 * time.Second}, false, ""},
		{"initial status and deregister after", []string{"SERVICE_CHECK_TCP", "1", "SERVICE_CHECK_INITIAL_STATUS", "Passing", "SERVICE_CHECK_DEREGISTER_AFTER", "90m"},
			&Check{TCP: "127.0.0.1:32768", Interval: 10 * time.Second, Status: "passing", DeregisterAfter: 90 * time.Minute}, false, ""},
		{"port-specific check", []string{"SERVICE_8080_CHECK_HTTP", "/p", "SERVICE_CHECK_HTTP", "/g"},
			&Check{HTTP: "http://127.0.0.1:32768/p", Interval: 10 * time.Second}, false, ""},
		{"http wins over tcp, tcp rejected", []string{"SERVICE_CHECK_HTTP", "/h", "SERVICE_CHECK_TCP", "true"},
			&Check{HTTP: "http://127.0.0.1:32768/h", Interval: 10 * time.Second}, false, "SERVICE_CHECK_TCP"},
		{"bad interval drops the service", []string{"SERVICE_CHECK_HTTP", "/h", "SERVICE_CHECK_INTERVAL", "often"}, nil, true, "SERVICE_CHECK_INTERVAL"},
		{"negative timeout drops the service", []string{"SERVICE_CHECK_HTTP", "/h", "SERVICE_CHECK_TIMEOUT", "-1s"}, nil, true, "SERVICE_CHECK_TIMEOUT"},
		{"bad ttl", []string{"SERVICE_CHECK_TTL", "30"}, nil, true, "SERVICE_CHECK_TTL"},
		{"bad status", []string{"SERVICE_CHECK_TCP", "true", "SERVICE_CHECK_INITIAL_STATUS", "ok"}, nil, true, "SERVICE_CHECK_INITIAL_STATUS"},
		{"bad method", []string{"SERVICE_CHECK_HTTP", "/", "SERVICE_CHECK_HTTP_METHOD", "GET /x"}, nil, true, "SERVICE_CHECK_HTTP_METHOD"},
		{"unterminated script quote", []string{"SERVICE_CHECK_SCRIPT", `echo "x`}, nil, true, "SERVICE_CHECK_SCRIPT"},
		{"http path with spaces", []string{"SERVICE_CHECK_HTTP", "/a b"}, nil, true, "SERVICE_CHECK_HTTP"},
		{"check_cmd unsupported but service kept", []string{"SERVICE_CHECK_CMD", "/bin/true"}, nil, false, "SERVICE_CHECK_CMD"},
		{"unknown check key", []string{"SERVICE_CHECK_FOO", "x"}, nil, false, "SERVICE_CHECK_FOO"},
		{"check keys are not meta", []string{"SERVICE_CHECK_TCP", "true", "SERVICE_CHECK_INTERVAL", "3s"},
			&Check{TCP: "127.0.0.1:32768", Interval: 3 * time.Second}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := FromContainer(web(labels(tt.labels...)), pol)
			if tt.noSvc {
				if len(got) != 0 {
					t.Fatalf("service registered despite a bad check: %+v", got[0].Check)
				}
			} else {
				if len(got) != 1 {
					t.Fatalf("want 1 service, got %d: %v", len(got), errs)
				}
				if !reflect.DeepEqual(got[0].Check, tt.want) {
					t.Errorf("check = %+v, want %+v", got[0].Check, tt.want)
				}
				for k := range got[0].Meta {
					if strings.HasPrefix(k, "check") {
						t.Errorf("check key in meta: %s", k)
					}
				}
			}
			if tt.errKey != "" && !hasErr(errs, tt.errKey) {
				t.Errorf("no rejection naming %s in %v", tt.errKey, errs)
			}
			if tt.errKey == "" && len(errs) > 0 {
				t.Errorf("unexpected rejections: %v", errs)
			}
		})
	}
}

func TestCheckIPv6Address(t *testing.T) {
	got, _ := FromContainer(web(labels("SERVICE_CHECK_HTTP", "/h"), ports(pub(8080, "tcp", "fd00::5", 1))), pol)
	if len(got) != 1 || got[0].Check.HTTP != "http://[fd00::5]:1/h" {
		t.Fatalf("got %+v", got)
	}
}

func TestRejectionsNameContainerKeyValue(t *testing.T) {
	_, errs := FromContainer(web(labels("SERVICE_CHECK_INTERVAL", "often", "SERVICE_CHECK_HTTP", "/")), pol)
	if len(errs) != 1 {
		t.Fatalf("want 1 error, got %v", errs)
	}
	msg := errs[0].Error()
	for _, want := range []string{"web1", "SERVICE_CHECK_INTERVAL", `"often"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not name %s", msg, want)
		}
	}
}

func TestForceTagsTemplateErrorFailsOnlyThatContainer(t *testing.T) {
	p := Policy{Node: "node1", ForceTags: mustTags(t, "{{.Config.Nope}}")}
	got, errs := FromContainer(web(func(c *container.Container) { c.Inspect = map[string]any{} }), p)
	if len(got) != 0 || !hasErr(errs, "--tags") {
		t.Fatalf("got %v, errs %v", got, errs)
	}
}

func TestDuplicateIDsInOneContainer(t *testing.T) {
	c := web(labels("SERVICE_80_ID", "same", "SERVICE_443_ID", "same"), ports(pub(80, "tcp", "127.0.0.1", 1), pub(443, "tcp", "127.0.0.1", 2)))
	got, errs := FromContainer(c, pol)
	if len(got) != 1 || got[0].Port != 1 || len(errs) != 1 {
		t.Fatalf("got %v, errs %v", summarize(got), errs)
	}
}

func TestFingerprint(t *testing.T) {
	a, _ := FromContainer(web(labels("SERVICE_TAGS", "a,b")), pol)
	b, _ := FromContainer(web(labels("SERVICE_TAGS", "a,b")), pol)
	c, _ := FromContainer(web(labels("SERVICE_TAGS", "b,a")), pol)
	if a[0].Fingerprint() != b[0].Fingerprint() {
		t.Error("same input, different fingerprint")
	}
	if a[0].Fingerprint() == c[0].Fingerprint() {
		t.Error("tag order change not seen")
	}
	withHash := a[0]
	withHash.Meta[MetaFingerprint] = "x"
	if withHash.Fingerprint() != b[0].Fingerprint() {
		t.Error("the fingerprint must not cover itself")
	}
}

// --label-filter: a container without every label (and value) asked for
// has no services and no rejections, whatever its SERVICE_ labels say.
func TestLabelFilter(t *testing.T) {
	filter, err := ParseLabelFilter([]string{"team=web", "expose"})
	if err != nil {
		t.Fatal(err)
	}
	p := Policy{Node: "n", HostIP: "10.0.0.1", LabelFilter: filter}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   int
	}{
		{"both labels", map[string]string{"team": "web", "expose": ""}, 1},
		{"wrong value", map[string]string{"team": "db", "expose": "yes"}, 0},
		{"one missing", map[string]string{"team": "web"}, 0},
		{"none, with a bad label", map[string]string{"SERVICE_ROUTE_PORT": "abc"}, 0},
	} {
		c := web()
		c.Labels = tc.labels
		svcs, errs := FromContainer(c, p)
		if len(svcs) != tc.want || (tc.want == 0 && len(errs) > 0) {
			t.Errorf("%s: %d services, errors %v; want %d and no error", tc.name, len(svcs), errs, tc.want)
		}
	}
	for _, bad := range []string{"", "=web", " team=web"} {
		if _, err := ParseLabelFilter([]string{bad}); err == nil || !strings.Contains(err.Error(), "--label-filter") {
			t.Errorf("ParseLabelFilter(%q) = %v, want an error naming the flag", bad, err)
		}
	}
}
