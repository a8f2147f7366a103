package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	ctconfig "github.com/hashicorp/consul-template/config"
)

func TestConsulTemplateGoesThroughTheMirror(t *testing.T) {
	c := &Config{Consul: Consul{Addr: "10.0.0.1:8501", Token: "secret", SSL: true, SSLVerify: true,
		MirrorAddr: "http://127.0.0.1:41234", MirrorSecret: "per-run"}}
	ct := c.ConsulTemplate(nil, nil)
	cc := ct.Consul
	if got := ctconfig.StringVal(cc.Address); got != "http://127.0.0.1:41234" {
		t.Fatalf("consul-template address = %q, want the mirror's", got)
	}
	if ctconfig.StringVal(cc.Token) != "per-run" || ctconfig.StringVal(cc.TokenFile) != "" || ctconfig.BoolVal(cc.SSL.Enabled) {
		t.Fatalf("consul-template talks to the mirror with token %q, token file %q, TLS %v; want the mirror's secret, no file, no TLS",
			ctconfig.StringVal(cc.Token), ctconfig.StringVal(cc.TokenFile), ctconfig.BoolVal(cc.SSL.Enabled))
	}
}

func TestMirrorUpstreamIsWhatConsulTemplateWouldUse(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name        string
		consul      Consul
		base, token string
		tls         bool
	}{
		{"plain", Consul{Addr: "127.0.0.1:8500", Token: "t"}, "http://127.0.0.1:8500", "t", false},
		{"ssl flag", Consul{Addr: "consul.internal:8501", SSL: true, SSLVerify: true}, "https://consul.internal:8501", "", true},
		{"scheme in address", Consul{Addr: "https://consul.internal:8501/", SSLVerify: true}, "https://consul.internal:8501", "", true},
		{"token file", Consul{Addr: "127.0.0.1:8500", TokenFile: tokenFile}, "http://127.0.0.1:8500", "from-file", false},
		{"unix socket", Consul{Addr: "unix:///run/consul/http.sock"}, "http://consul", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.consul.MirrorAddr = "http://127.0.0.1:1"
			up, err := (&Config{Consul: tc.consul}).MirrorUpstream()
			if err != nil {
				t.Fatal(err)
			}
			token := up.Token
			if up.TokenFile != "" { // read for every request by the mirror
				b, _ := os.ReadFile(up.TokenFile)
				token = strings.TrimSpace(string(b))
			}
			if up.BaseURL != tc.base || token != tc.token || (up.Transport.TLSClientConfig != nil) != tc.tls {
				t.Fatalf("upstream = %q token %q TLS %v; want %q %q %v", up.BaseURL, token, up.Transport.TLSClientConfig != nil, tc.base, tc.token, tc.tls)
			}
		})
	}
}
