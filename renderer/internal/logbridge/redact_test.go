package logbridge

import (
	"strings"
	"testing"
)

func TestRedactorKnownSecretForms(t *testing.T) {
	r := NewRedactor("  s3cr&t/\"x\n")
	for _, in := range []string{
		`token s3cr&t/"x here`,
		`q=s3cr%26t%2F%22x`,
		`path s3cr&t%2F%22x`,
		`{"v":"s3cr&t/\"x"}`,
		`{"v":"s3cr\u0026t/\"x"}`,
	} {
		got := r(in)
		if strings.Contains(got, "s3cr") || !strings.Contains(got, Redacted) {
			t.Errorf("%q -> %q", in, got)
		}
	}
}

// Where one secret contains another, the longer one goes whole.
func TestRedactorLongestFirst(t *testing.T) {
	r := NewRedactor("abc", "abc-def")
	if got := r("x abc-def abc y"); got != "x "+Redacted+" "+Redacted+" y" {
		t.Errorf("got %q", got)
	}
}

// Tokens nobody told the bridge about, found by their context.
func TestRedactorPatterns(t *testing.T) {
	r := NewRedactor()
	for _, in := range []string{
		`{"Consul":{"Token":"unknown-1"},"Vault":{"Token":"unknown-2"}}`,
		`{"Auth":{"Enabled":true,"Username":"u","Password":"unknown-3"}}`,
		`Get "http://127.0.0.1:8500/v1/health/service/web?index=12&token=unknown-4&wait=60000ms": EOF`,
		`request headers: X-Consul-Token: unknown-5`,
		`headers map[X-Consul-Token:[unknown-6] X-Other:[a]]`,
		`{"X-Vault-Token":["unknown-7"]}`,
		`Authorization: Bearer unknown-8`,
		`vault token hvs.CAESIunknown9abcdefghijklmnop in use`,
		`consul_token=unknown-10 addr=x`,
	} {
		got := r(in)
		if strings.Contains(got, "unknown") || strings.Contains(got, "CAESI") {
			t.Errorf("%q\n-> %q", in, got)
		}
	}
}

func TestRedactorKeepsTheRest(t *testing.T) {
	r := NewRedactor("s3cret")
	for _, in := range []string{
		`{"Token":"","TokenFile":"/etc/consul/token","RenewToken":true,"UnwrapToken":false}`,
		`health.service(web|passing): Get "http://127.0.0.1:8500/v1/health/service/web?index=3": EOF`,
		`token file /etc/consul/token not readable`,
	} {
		if got := r(in); got != in {
			t.Errorf("%q\n-> %q", in, got)
		}
	}
}
