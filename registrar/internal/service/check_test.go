package service

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/registrar/internal/container"
)

// checkForm is one way of writing a check's keys; every key must behave
// the same in each.
type checkForm struct {
	name  string
	key   func(suffix string) string // "HTTP" -> the label to set
	index int
}

var checkForms = []checkForm{
	{"registrator's keys", func(s string) string { return "SERVICE_CHECK_" + s }, 0},
	{"indexed", func(s string) string { return "SERVICE_CHECK_2_" + s }, 2},
	{"per-port indexed", func(s string) string { return "SERVICE_8080_CHECK_7_" + s }, 7},
	{"per-port-proto indexed", func(s string) string { return "SERVICE_8080_TCP_CHECK_12_" + s }, 12},
}

// TestCheckKeys runs every key of the table, with good and bad values, in
// every form: unindexed, SERVICE_CHECK_<n>_ and SERVICE_<port>_CHECK_<n>_.
func TestCheckKeys(t *testing.T) {
	const at = "127.0.0.1:32768" // web()'s published address
	tests := []struct {
		name string
		kv   []string // suffix, value, ...
		want *Check   // nil: no check
		drop bool     // the check is refused (the service, having no other, too)
		bad  string   // suffix of the key a rejection must name
	}{
		// kinds
		{"http", []string{"HTTP", "/health"}, &Check{HTTP: "http://" + at + "/health", Interval: 10 * time.Second}, false, ""},
		{"http adds the slash", []string{"HTTP", "health?x=1"}, &Check{HTTP: "http://" + at + "/health?x=1", Interval: 10 * time.Second}, false, ""},
		{"https", []string{"HTTPS", "/h"}, &Check{HTTP: "https://" + at + "/h", Interval: 10 * time.Second}, false, ""},
		{"script", []string{"SCRIPT", `check -p $SERVICE_PORT "a b"`}, &Check{Args: []string{"check", "-p", "32768", "a b"}, Interval: 10 * time.Second}, false, ""},
		{"ttl", []string{"TTL", "1m30s"}, &Check{TTL: 90 * time.Second}, false, ""},
		{"tcp", []string{"TCP", "yes"}, &Check{TCP: at, Interval: 10 * time.Second}, false, ""},
		{"tcp off", []string{"TCP", "off"}, nil, false, ""},
		{"tcp not a boolean: on, with a warning", []string{"TCP", "maybe"}, &Check{TCP: at, Interval: 10 * time.Second}, false, "TCP"},
		{"grpc", []string{"GRPC", "true"}, &Check{GRPC: at, Interval: 10 * time.Second}, false, ""},
		{"grpc service", []string{"GRPC", "pkg.Health"}, &Check{GRPC: at + "/pkg.Health", Interval: 10 * time.Second}, false, ""},
		{"grpc off", []string{"GRPC", "false"}, nil, false, ""},
		{"empty kind is unset", []string{"HTTP", " "}, nil, false, ""},
		{"first kind wins, the other is reported", []string{"TCP", "1", "HTTPS", "/s"}, &Check{HTTP: "https://" + at + "/s", Interval: 10 * time.Second}, false, "TCP"},
		{"an off kind lets the next one win", []string{"TCP", "0", "GRPC", "1"}, &Check{GRPC: at, Interval: 10 * time.Second}, false, ""},
		// options
		{"interval", []string{"TCP", "1", "INTERVAL", "3s"}, &Check{TCP: at, Interval: 3 * time.Second}, false, ""},
		{"interval means nothing to ttl", []string{"TTL", "30s", "INTERVAL", "3s"}, &Check{TTL: 30 * time.Second}, false, ""},
		{"timeout", []string{"TCP", "1", "TIMEOUT", "500ms"}, &Check{TCP: at, Interval: 10 * time.Second, Timeout: 500 * time.Millisecond}, false, ""},
		{"deregister after", []string{"TTL", "30s", "DEREGISTER_AFTER", "1h"}, &Check{TTL: 30 * time.Second, DeregisterAfter: time.Hour}, false, ""},
		{"initial status", []string{"TTL", "30s", "INITIAL_STATUS", " Critical "}, &Check{TTL: 30 * time.Second, Status: "critical"}, false, ""},
		{"http method", []string{"HTTP", "/", "HTTP_METHOD", "post"}, &Check{HTTP: "http://" + at + "/", Method: "POST", Interval: 10 * time.Second}, false, ""},
		{"http method means nothing to tcp", []string{"TCP", "1", "HTTP_METHOD", "POST"}, &Check{TCP: at, Interval: 10 * time.Second}, false, ""},
		{"header", []string{"HTTP", "/", "HTTP_HEADER_x-api-key", "k1"}, &Check{HTTP: "http://" + at + "/", Header: map[string][]string{"X-Api-Key": {"k1"}}, Interval: 10 * time.Second}, false, ""},
		{"header means nothing to tcp", []string{"TCP", "1", "HTTP_HEADER_Host", "a"}, &Check{TCP: at, Interval: 10 * time.Second}, false, ""},
		{"tls skip verify", []string{"HTTPS", "/", "TLS_SKIP_VERIFY", "on"}, &Check{HTTP: "https://" + at + "/", TLSSkipVerify: true, Interval: 10 * time.Second}, false, ""},
		{"grpc use tls", []string{"GRPC", "1", "GRPC_USE_TLS", "true"}, &Check{GRPC: at, GRPCUseTLS: true, Interval: 10 * time.Second}, false, ""},
		{"grpc use tls means nothing to http", []string{"HTTP", "/", "GRPC_USE_TLS", "true"}, &Check{HTTP: "http://" + at + "/", Interval: 10 * time.Second}, false, ""},
		{"port", []string{"TCP", "1", "PORT", "9000"}, &Check{TCP: "172.17.0.2:9000", Interval: 10 * time.Second}, false, ""},
		{"empty option is unset", []string{"TCP", "1", "INTERVAL", "", "TIMEOUT", " "}, &Check{TCP: at, Interval: 10 * time.Second}, false, ""},
		{"options without a kind are no check", []string{"INTERVAL", "often", "PORT", "x"}, nil, false, ""},
		// bad values
		{"bad http path", []string{"HTTP", "/a b"}, nil, true, "HTTP"},
		{"bad https path", []string{"HTTPS", "/\x01"}, nil, true, "HTTPS"},
		{"bad script", []string{"SCRIPT", `echo 'x`}, nil, true, "SCRIPT"},
		{"script with a trailing backslash", []string{"SCRIPT", `\`}, nil, true, "SCRIPT"},
		{"bad ttl", []string{"TTL", "30"}, nil, true, "TTL"},
		{"zero ttl", []string{"TTL", "0s"}, nil, true, "TTL"},
		{"bad interval", []string{"HTTP", "/", "INTERVAL", "often"}, nil, true, "INTERVAL"},
		{"bad timeout", []string{"TCP", "1", "TIMEOUT", "-1s"}, nil, true, "TIMEOUT"},
		{"bad deregister after", []string{"TCP", "1", "DEREGISTER_AFTER", "soon"}, nil, true, "DEREGISTER_AFTER"},
		{"bad initial status", []string{"TCP", "1", "INITIAL_STATUS", "ok"}, nil, true, "INITIAL_STATUS"},
		{"bad http method", []string{"HTTP", "/", "HTTP_METHOD", "GET /x"}, nil, true, "HTTP_METHOD"},
		{"bad header name", []string{"HTTP", "/", "HTTP_HEADER_a:b", "v"}, nil, true, "HTTP_HEADER_a:b"},
		{"bad header value", []string{"HTTP", "/", "HTTP_HEADER_X", "a\r\nEvil: 1"}, nil, true, "HTTP_HEADER_X"},
		{"bad tls skip verify", []string{"HTTPS", "/", "TLS_SKIP_VERIFY", "perhaps"}, nil, true, "TLS_SKIP_VERIFY"},
		{"bad grpc use tls", []string{"GRPC", "1", "GRPC_USE_TLS", "perhaps"}, nil, true, "GRPC_USE_TLS"},
		{"bad port", []string{"HTTP", "/", "PORT", "http"}, nil, true, "PORT"},
		{"port out of range", []string{"TCP", "1", "PORT", "65536"}, nil, true, "PORT"},
		{"unknown key", []string{"TCP", "1", "HTTP_HEADERS", "x"}, &Check{TCP: at, Interval: 10 * time.Second}, false, "HTTP_HEADERS"},
		{"check_cmd", []string{"CMD", "/bin/true"}, nil, false, "CMD"},
	}
	for _, form := range checkForms {
		for _, tt := range tests {
			t.Run(form.name+"/"+tt.name, func(t *testing.T) {
				var kv []string
				for i := 0; i+1 < len(tt.kv); i += 2 {
					kv = append(kv, form.key(tt.kv[i]), tt.kv[i+1])
				}
				got, errs := FromContainer(web(labels(kv...)), pol)
				if tt.drop {
					if len(got) != 0 {
						t.Fatalf("registered without the check it asked for: %+v", got[0].AllChecks())
					}
				} else {
					if len(got) != 1 {
						t.Fatalf("want 1 service, got %d: %v", len(got), errs)
					}
					var want *Check
					if tt.want != nil {
						w := *tt.want
						w.Index = form.index
						want = &w
					}
					if !reflect.DeepEqual(got[0].Check, want) || got[0].Checks != nil {
						t.Errorf("check = %+v %+v\nwant    %+v", got[0].Check, got[0].Checks, want)
					}
				}
				switch {
				case tt.bad != "":
					key := form.key(tt.bad)
					value := ""
					for i := 0; i < len(tt.kv); i += 2 {
						if tt.kv[i] == tt.bad {
							value = tt.kv[i+1]
						}
					}
					if e := findErr(errs, key); e == nil || e.Value != value || e.Container != "web1" || e.ContainerID != cid {
						t.Errorf("no rejection naming web1, %s and %q in %v", key, value, errs)
					}
					if len(errs) != 1 {
						t.Errorf("want exactly one rejection, got %v", errs)
					}
				case len(errs) > 0:
					t.Errorf("unexpected rejections: %v", errs)
				}
			})
		}
	}
}

func findErr(errs []error, key string) *Error {
	for _, err := range errs {
		var e *Error
		if errors.As(err, &e) && e.Key == key {
			return e
		}
	}
	return nil
}

func TestIndexedChecks(t *testing.T) {
	c := web(labels(
		"SERVICE_CHECK_HTTP", "/health", // check 0, registrator's
		"SERVICE_CHECK_INTERVAL", "5s",
		"SERVICE_CHECK_1_TCP", "true",
		"SERVICE_CHECK_1_INTERVAL", "1s",
		"SERVICE_CHECK_10_TTL", "30s",
		"SERVICE_CHECK_2_GRPC", "true",
		"SERVICE_CHECK_2_TIMEOUT", "2s",
		"SERVICE_8080_CHECK_2_GRPC", "pkg.Health", // per port beats generic, key by key
		"SERVICE_8080_CHECK_3_HTTPS", "/ready",
		"SERVICE_9999_CHECK_4_TCP", "true", // another port's: not ours
	))
	got, errs := FromContainer(c, pol)
	if len(got) != 1 || len(errs) != 0 {
		t.Fatalf("got %d services, errs %v", len(got), errs)
	}
	want := []Check{
		{HTTP: "http://127.0.0.1:32768/health", Interval: 5 * time.Second},
		{Index: 1, TCP: "127.0.0.1:32768", Interval: time.Second},
		{Index: 2, GRPC: "127.0.0.1:32768/pkg.Health", Interval: 10 * time.Second, Timeout: 2 * time.Second},
		{Index: 3, HTTP: "https://127.0.0.1:32768/ready", Interval: 10 * time.Second},
		{Index: 10, TTL: 30 * time.Second},
	}
	if all := got[0].AllChecks(); !reflect.DeepEqual(all, want) {
		t.Errorf("checks\n got %+v\nwant %+v", all, want)
	}
	if !reflect.DeepEqual(*got[0].Check, want[0]) || !reflect.DeepEqual(got[0].Checks, want[1:]) {
		t.Errorf("Check/Checks split: %+v / %+v", got[0].Check, got[0].Checks)
	}
}

func TestIndexedChecksOnly(t *testing.T) {
	got, errs := FromContainer(web(labels("SERVICE_CHECK_3_HTTP", "/a", "SERVICE_CHECK_1_TCP", "1")), pol)
	if len(got) != 1 || len(errs) != 0 {
		t.Fatalf("got %d services, errs %v", len(got), errs)
	}
	s := got[0]
	if s.Check == nil || s.Check.Index != 1 || s.Check.TCP == "" || len(s.Checks) != 1 || s.Checks[0].Index != 3 {
		t.Errorf("the lowest index must be Check: %+v %+v", s.Check, s.Checks)
	}
}

func TestIndexedChecksPerPort(t *testing.T) {
	c := web(
		labels("SERVICE_CHECK_1_TCP", "true", "SERVICE_443_CHECK_2_HTTPS", "/", "SERVICE_443_CHECK_1_TCP", "false"),
		ports(pub(80, "tcp", "127.0.0.1", 1080), pub(443, "tcp", "127.0.0.1", 1443)))
	got, errs := FromContainer(c, pol)
	if len(got) != 2 || len(errs) != 0 {
		t.Fatalf("got %v, errs %v", summarize(got), errs)
	}
	checks := map[int][]Check{}
	for _, s := range got {
		checks[s.Port] = s.AllChecks()
	}
	want := map[int][]Check{
		1080: {{Index: 1, TCP: "127.0.0.1:1080", Interval: 10 * time.Second}},
		1443: {{Index: 2, HTTP: "https://127.0.0.1:1443/", Interval: 10 * time.Second}},
	}
	if !reflect.DeepEqual(checks, want) {
		t.Errorf("got  %+v\nwant %+v", checks, want)
	}
}

func TestCheckIndexKeys(t *testing.T) {
	tests := []struct{ key, reason string }{
		{"SERVICE_CHECK_0_HTTP", "want 1 to 99"},
		{"SERVICE_CHECK_01_HTTP", "want 1 to 99"},
		{"SERVICE_CHECK_100_HTTP", "want 1 to 99"},
		{"SERVICE_CHECK_8080_HTTP", "SERVICE_<port>_CHECK_"},
		{"SERVICE_CHECK_99999999999999999999_HTTP", "want 1 to 99"},
		{"SERVICE_CHECK_1_", "no key after the check index"},
		{"SERVICE_CHECK_1_FOO", "unknown check key"},
		{"SERVICE_CHECK_1_CMD", "SERVICE_CHECK_SCRIPT"},
		{"SERVICE_CHECK_1_HTTP_HEADER", "unknown check key"},
	}
	for _, tt := range tests {
		got, errs := FromContainer(web(labels(tt.key, "/x", "SERVICE_CHECK_5_TCP", "1")), pol)
		e := findErr(errs, tt.key)
		if e == nil || !strings.Contains(e.Reason, tt.reason) || e.Value != "/x" || e.Container != "web1" {
			t.Errorf("%s: want a rejection saying %q, got %v", tt.key, tt.reason, errs)
		}
		if len(got) != 1 || len(got[0].AllChecks()) != 1 || got[0].Check.Index != 5 {
			t.Errorf("%s: the other check and the service must stay: %+v", tt.key, got)
		}
	}
}

func TestCheckHeaders(t *testing.T) {
	c := web(
		env("SERVICE_CHECK_HTTP_HEADER_Authorization=Bearer from-env"),
		labels(
			"SERVICE_CHECK_HTTPS", "/h",
			"SERVICE_CHECK_HTTP_HEADER_X-API-KEY", "k, k2", // several values: one comma list
			"SERVICE_8080_CHECK_HTTP_HEADER_host", "api.example.com", // per port adds to generic
			"SERVICE_CHECK_HTTP_HEADER_Authorization", "Bearer from-label", // label beats env
			"SERVICE_CHECK_HTTP_HEADER_X-Empty", " ", // empty: unset
			"SERVICE_CHECK_1_HTTP", "/other",
			"SERVICE_CHECK_1_HTTP_HEADER_X-Only-One", "1", // check 1's headers stay check 1's
		))
	got, errs := FromContainer(c, pol)
	if len(got) != 1 || len(errs) != 0 {
		t.Fatalf("got %d services, errs %v", len(got), errs)
	}
	want := map[string][]string{"X-Api-Key": {"k, k2"}, "Host": {"api.example.com"}, "Authorization": {"Bearer from-label"}}
	if h := got[0].Check.Header; !reflect.DeepEqual(h, want) {
		t.Errorf("check 0 headers = %v, want %v", h, want)
	}
	if h := got[0].Checks[0].Header; !reflect.DeepEqual(h, map[string][]string{"X-Only-One": {"1"}}) {
		t.Errorf("check 1 headers = %v", h)
	}
}

func TestCheckOnAnotherPort(t *testing.T) {
	withAdmin := func(admin container.Port) func(*container.Container) {
		return ports(pub(8080, "tcp", "127.0.0.1", 32768), admin)
	}
	tests := []struct {
		name   string
		c      container.Container
		p      Policy
		labels []string
		want   []Check
		bad    string // a rejection naming this key
	}{
		{"published port: its binding", web(withAdmin(pub(9090, "tcp", "127.0.0.1", 39090))), pol,
			[]string{"SERVICE_8080_CHECK_HTTP", "/metrics", "SERVICE_8080_CHECK_PORT", "9090"},
			[]Check{{HTTP: "http://127.0.0.1:39090/metrics", Interval: 10 * time.Second}}, ""},
		{"wildcard published port: --ip", web(withAdmin(pub(9090, "tcp", "0.0.0.0", 39090))), Policy{Node: "node1", HostIP: "192.168.1.5"},
			[]string{"SERVICE_8080_CHECK_TCP", "1", "SERVICE_8080_CHECK_PORT", "9090"},
			[]Check{{TCP: "192.168.1.5:39090", Interval: 10 * time.Second}}, ""},
		{"exposed only: the container IP", web(withAdmin(exposed(9090, "tcp"))), pol,
			[]string{"SERVICE_CHECK_HTTP", "/h", "SERVICE_CHECK_PORT", "9090"},
			[]Check{{HTTP: "http://172.17.0.2:9090/h", Interval: 10 * time.Second}}, ""},
		{"not even exposed: the container IP", web(), pol,
			[]string{"SERVICE_CHECK_GRPC", "pkg.Health", "SERVICE_CHECK_PORT", "9091"},
			[]Check{{GRPC: "172.17.0.2:9091/pkg.Health", Interval: 10 * time.Second}}, ""},
		{"--internal: container IP and port even when published", web(withAdmin(pub(9090, "tcp", "127.0.0.1", 39090))), Policy{Node: "node1", Internal: true},
			[]string{"SERVICE_8080_CHECK_TCP", "1", "SERVICE_8080_CHECK_PORT", "9090"},
			[]Check{{TCP: "172.17.0.2:9090", Interval: 10 * time.Second}}, ""},
		{"host network: host address and the port", web(func(c *container.Container) {
			c.NetworkMode, c.HostNetwork, c.Networks = "host", true, nil
		}, ports(exposed(8080, "tcp"))), pol,
			[]string{"SERVICE_CHECK_TCP", "1", "SERVICE_CHECK_PORT", "9090"},
			[]Check{{TCP: "10.0.0.9:9090", Interval: 10 * time.Second}}, ""},
		{"SERVICE_IP applies to the checked port too", web(withAdmin(pub(9090, "tcp", "127.0.0.1", 39090))), pol,
			[]string{"SERVICE_8080_IP", "192.168.7.7", "SERVICE_8080_CHECK_TCP", "1", "SERVICE_8080_CHECK_PORT", "9090"},
			[]Check{{TCP: "192.168.7.7:39090", Interval: 10 * time.Second}}, ""},
		{"IPv6 binding", web(withAdmin(pub(9090, "tcp", "fd00::5", 39090))), pol,
			[]string{"SERVICE_8080_CHECK_HTTP", "/", "SERVICE_8080_CHECK_PORT", "9090"},
			[]Check{{HTTP: "http://[fd00::5]:39090/", Interval: 10 * time.Second}}, ""},
		{"a udp port of that number is not the target", web(withAdmin(pub(9090, "udp", "127.0.0.1", 39090))), pol,
			[]string{"SERVICE_8080_CHECK_TCP", "1", "SERVICE_8080_CHECK_PORT", "9090"},
			[]Check{{TCP: "172.17.0.2:9090", Interval: 10 * time.Second}}, ""},
		{"per check: check 1 on the admin port, check 0 on the service", web(withAdmin(pub(9090, "tcp", "127.0.0.1", 39090))), pol,
			[]string{"SERVICE_8080_CHECK_TCP", "1", "SERVICE_8080_CHECK_1_HTTP", "/ready", "SERVICE_8080_CHECK_1_PORT", "9090"},
			[]Check{{TCP: "127.0.0.1:32768", Interval: 10 * time.Second}, {Index: 1, HTTP: "http://127.0.0.1:39090/ready", Interval: 10 * time.Second}}, ""},
		{"script keeps the service's $SERVICE_PORT", web(), pol,
			[]string{"SERVICE_CHECK_SCRIPT", "probe $SERVICE_IP $SERVICE_PORT", "SERVICE_CHECK_PORT", "9090"},
			[]Check{{Args: []string{"probe", "127.0.0.1", "32768"}, Interval: 10 * time.Second}}, ""},
		{"ttl ignores even a bad port", web(), pol,
			[]string{"SERVICE_CHECK_TTL", "30s", "SERVICE_CHECK_PORT", "x"},
			[]Check{{TTL: 30 * time.Second}}, ""},
		{"port with no address: check refused, the other kept", web(func(c *container.Container) { c.Networks = nil }), pol,
			[]string{"SERVICE_CHECK_TCP", "1", "SERVICE_CHECK_1_TCP", "1", "SERVICE_CHECK_1_PORT", "9090"},
			[]Check{{TCP: "127.0.0.1:32768", Interval: 10 * time.Second}}, "SERVICE_CHECK_1_PORT"},
		{"port 0: check refused, the other kept", web(), pol,
			[]string{"SERVICE_CHECK_TCP", "1", "SERVICE_CHECK_1_TCP", "1", "SERVICE_CHECK_1_PORT", "0"},
			[]Check{{TCP: "127.0.0.1:32768", Interval: 10 * time.Second}}, "SERVICE_CHECK_1_PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.Labels = nil
			labels(tt.labels...)(&tt.c)
			got, errs := FromContainer(tt.c, tt.p)
			var svc *Service
			for i := range got {
				if got[i].ID == "node1:web1:8080" {
					svc = &got[i]
				}
			}
			if svc == nil {
				t.Fatalf("no service for 8080: %v, errs %v", summarize(got), errs)
			}
			if all := svc.AllChecks(); !reflect.DeepEqual(all, tt.want) {
				t.Errorf("checks\n got %+v\nwant %+v", all, tt.want)
			}
			if tt.bad != "" && findErr(errs, tt.bad) == nil {
				t.Errorf("no rejection naming %s in %v", tt.bad, errs)
			}
			if tt.bad == "" && len(errs) > 0 {
				t.Errorf("unexpected rejections: %v", errs)
			}
		})
	}
}

// TestBadCheckKeepsTheRest: a bad value refuses one check, reported with
// container, key and value; the service keeps its other checks, the
// container its other services.
func TestBadCheckKeepsTheRest(t *testing.T) {
	c := web(
		labels(
			"SERVICE_443_CHECK_TCP", "true",
			"SERVICE_443_CHECK_1_HTTP", "/ready",
			"SERVICE_443_CHECK_1_INTERVAL", "often", // refuses check 1 only
			"SERVICE_443_CHECK_2_HTTP", "/live",
			"SERVICE_443_CHECK_2_HTTP_HEADER_X-A", "ok",
			"SERVICE_443_CHECK_3_HTTP", "/",
			"SERVICE_443_CHECK_3_HTTP_HEADER_Bad Name", "v", // refuses check 3 only
			"SERVICE_80_CHECK_1_TTL", "forever", // port 80 asked for a check and kept none: dropped
			"SERVICE_80_CHECK_2_TCP", "off",
		),
		ports(pub(80, "tcp", "127.0.0.1", 1080), pub(443, "tcp", "127.0.0.1", 1443), pub(9000, "tcp", "127.0.0.1", 1900)))
	got, errs := FromContainer(c, pol)
	if s := summarize(got); len(s) != 2 || s[0].Port != 1443 || s[1].Port != 1900 {
		t.Fatalf("want the 443 and 9000 services, got %v (errs %v)", s, errs)
	}
	var idx []int
	for _, ch := range got[0].AllChecks() {
		idx = append(idx, ch.Index)
	}
	if !reflect.DeepEqual(idx, []int{0, 2}) {
		t.Errorf("checks kept = %v, want [0 2]", idx)
	}
	want := map[string]string{
		"SERVICE_443_CHECK_1_INTERVAL":             "often",
		"SERVICE_443_CHECK_3_HTTP_HEADER_Bad Name": "v",
		"SERVICE_80_CHECK_1_TTL":                   "forever",
	}
	if len(errs) != len(want) {
		t.Errorf("want %d rejections, got %v", len(want), errs)
	}
	for key, value := range want {
		e := findErr(errs, key)
		if e == nil || e.Value != value || e.Container != "web1" || e.ContainerID != cid {
			t.Errorf("no rejection naming web1, %s and %q in %v", key, value, errs)
			continue
		}
		if msg := e.Error(); !strings.Contains(msg, "web1") || !strings.Contains(msg, key) || !strings.Contains(msg, `"`+value+`"`) {
			t.Errorf("message %q does not name container, key and value", msg)
		}
	}
}

// TestFingerprintUnchangedByNewFields pins fingerprints computed before
// indexed checks and headers existed: an upgrade must not re-register
// every service.
func TestFingerprintUnchangedByNewFields(t *testing.T) {
	tests := []struct {
		labels []string
		want   string
	}{
		{nil, "99c2652426edc5cb"},
		{[]string{"SERVICE_CHECK_HTTP", "/health", "SERVICE_CHECK_TIMEOUT", "2s"}, "5580a0b90841254c"},
		{[]string{"SERVICE_CHECK_TTL", "30s"}, "de1ab5cd7056eb0a"},
	}
	for _, tt := range tests {
		got, _ := FromContainer(web(labels(tt.labels...)), pol)
		if fp := got[0].Fingerprint(); fp != tt.want {
			t.Errorf("%q: fingerprint %s, was %s", tt.labels, fp, tt.want)
		}
	}
	a, _ := FromContainer(web(labels("SERVICE_CHECK_HTTP", "/", "SERVICE_CHECK_1_TCP", "1")), pol)
	b, _ := FromContainer(web(labels("SERVICE_CHECK_HTTP", "/", "SERVICE_CHECK_1_TCP", "1", "SERVICE_CHECK_HTTP_HEADER_X", "1")), pol)
	c, _ := FromContainer(web(labels("SERVICE_CHECK_HTTP", "/")), pol)
	if a[0].Fingerprint() == b[0].Fingerprint() || a[0].Fingerprint() == c[0].Fingerprint() {
		t.Error("a header or an extra check must change the fingerprint")
	}
}

// TestReadmeCheckExample is the example of README's "Container metadata".
func TestReadmeCheckExample(t *testing.T) {
	c := web(labels(
		"SERVICE_NAME", "api",
		"SERVICE_CHECK_HTTP", "/health",
		"SERVICE_CHECK_HTTP_HEADER_Host", "api.example.com",
		"SERVICE_CHECK_1_TCP", "true", "SERVICE_CHECK_1_INTERVAL", "2s",
		"SERVICE_CHECK_2_HTTP", "/ready", "SERVICE_CHECK_2_PORT", "9090",
		"SERVICE_CHECK_2_HTTP_HEADER_X-Probe", "registrar",
	))
	got, errs := FromContainer(c, pol)
	if len(got) != 1 || len(errs) != 0 || got[0].Name != "api" {
		t.Fatalf("got %v, errs %v", summarize(got), errs)
	}
	want := []Check{
		{HTTP: "http://127.0.0.1:32768/health", Header: map[string][]string{"Host": {"api.example.com"}}, Interval: 10 * time.Second},
		{Index: 1, TCP: "127.0.0.1:32768", Interval: 2 * time.Second},
		{Index: 2, HTTP: "http://172.17.0.2:9090/ready", Header: map[string][]string{"X-Probe": {"registrar"}}, Interval: 10 * time.Second},
	}
	if all := got[0].AllChecks(); !reflect.DeepEqual(all, want) {
		t.Errorf("checks\n got %+v\nwant %+v", all, want)
	}
}
