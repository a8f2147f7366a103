package service

import (
	"errors"
	"strings"
	"testing"
)

// FuzzLabels feeds arbitrary SERVICE_* keys and values (as a label and as
// an env var) through the whole rule set. Seeds live in
// testdata/fuzz/FuzzLabels; run with: go test -fuzz FuzzLabels ./registrar/internal/service
func FuzzLabels(f *testing.F) {
	f.Add("SERVICE_NAME", "api", "SERVICE_TAGS=a,b")
	f.Add("SERVICE_80_UDP_NAME", "dns", "SERVICE_CHECK_SCRIPT=echo 'x")
	f.Add("SERVICE_8080_CHECK_HTTP", "/health", "SERVICE_CHECK_INTERVAL=1s")
	f.Add("SERVICE_IP", "::1/64", "SERVICE_NETWORK=none")
	f.Add("SERVICE_", "", "SERVICE_99999_ID=x")
	f.Add("SERVICE_CHECK_1_HTTP", "/h", "SERVICE_CHECK_1_PORT=9000")
	f.Add("SERVICE_8080_CHECK_2_HTTP_HEADER_X-Key", "v\r\n", "SERVICE_CHECK_2_HTTPS=/")
	f.Add("SERVICE_CHECK_PORT", "53", "SERVICE_CHECK_GRPC=svc")
	f.Add("SERVICE_CHECK_07_TCP", "1", "SERVICE_53_UDP_CHECK_99_TTL=1s")
	f.Add("SERVICE_ROUTE_HOST", "A.com,*.b.com", "SERVICE_8080_ROUTE_PATH=/x")
	f.Add("SERVICE_TAGS", "urlprefix-a.com/x strip=/x,urlprefix-:9 proto=tcp", "VIRTUAL_HOST=b.com")
	f.Add("SERVICE_ROUTE_PORT", "70000", "VIRTUAL_PORT=8080")
	f.Fuzz(func(t *testing.T, key, value, envKV string) {
		c := web(
			labels(key, value),
			env(envKV),
			ports(pub(8080, "tcp", "0.0.0.0", 32768), pub(53, "udp", "127.0.0.1", 1053), exposed(9000, "tcp")),
		)
		for _, p := range []Policy{pol, {Node: "n", Internal: true}, {Node: "n", Explicit: true, IPFromLabel: key}} {
			got, errs := FromContainer(c, p)
			for _, err := range errs {
				var e *Error
				if !errors.As(err, &e) || e.Key == "" {
					t.Fatalf("rejection without a key: %v", err)
				}
			}
			ids := map[string]bool{}
			for _, s := range got {
				if ids[s.ID] {
					t.Fatalf("duplicate ID %q", s.ID)
				}
				ids[s.ID] = true
				if r := badID(s.ID); r != "" {
					t.Fatalf("bad ID %q registered: %s", s.ID, r)
				}
				if !nameRE.MatchString(s.Name) {
					t.Fatalf("bad name %q registered", s.Name)
				}
				if s.Meta[MetaNode] != p.Node || s.Meta[MetaContainerID] != c.ID || len(s.Meta) >= maxMetaPairs {
					t.Fatalf("bad meta %v", s.Meta)
				}
				for k, v := range s.Meta {
					if !metaKeyRE.MatchString(k) || len(k) > maxMetaKeyLen || len(v) > maxMetaValueLen {
						t.Fatalf("meta %q=%q registered", k, v)
					}
					if rule, ok := routeRules[k]; strings.HasPrefix(k, routePrefix) && (!ok || !normal(rule, v)) {
						t.Fatalf("routing meta %q=%q registered", k, v)
					}
				}
				if s.Address == "" || s.Port <= 0 {
					t.Fatalf("no address: %+v", s)
				}
				last := -1
				for _, ch := range s.AllChecks() {
					if !ch.probes() || ch.Index <= last || ch.Index > maxCheckIndex {
						t.Fatalf("bad check %+v after index %d", ch, last)
					}
					last = ch.Index
					for name, vs := range ch.Header {
						if !headerNameRE.MatchString(name) || len(vs) != 1 || hasControl(vs[0]) {
							t.Fatalf("header %q=%q registered", name, vs)
						}
					}
				}
				_ = s.Fingerprint()
			}
		}
	})
}

// normal reports whether v is a value rule accepts as it is.
func normal(rule routeRule, v string) bool {
	norm, problems := rule(v)
	return norm == v && len(problems) == 0
}
