package config

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseTemplate(t *testing.T) {
	for _, c := range []struct {
		in, proxy, err string
	}{
		{"a.tmpl:/etc/nginx.conf", "nginx", ""},
		{"a.tmpl:/etc/h.cfg:haproxy", "haproxy", ""},
		{"a.tmpl:/x:none", "none", ""},
		{"a.tmpl", "", "want SRC:DEST"},
		{"a.tmpl:/x:squid", "", `proxy "squid"`},
		{":/x", "", "must not be empty"},
	} {
		got, err := ParseTemplate(c.in, "nginx")
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "--template") {
				t.Errorf("%q: err %v, want %q naming --template", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got.Proxy != c.proxy {
			t.Errorf("%q: %+v %v", c.in, got, err)
		}
	}
}

func TestParseWait(t *testing.T) {
	lo, hi, err := ParseWait("100ms:1s")
	if err != nil || lo != 100*time.Millisecond || hi != time.Second {
		t.Errorf("100ms:1s -> %v %v %v", lo, hi, err)
	}
	lo, hi, _ = ParseWait("2s")
	if lo != 2*time.Second || hi != 8*time.Second {
		t.Errorf("2s -> %v %v", lo, hi)
	}
	if _, _, err := ParseWait("1s:10ms"); err == nil || !strings.Contains(err.Error(), "--wait") {
		t.Errorf("MAX < MIN accepted: %v", err)
	}
}

func TestConsulTemplateDaemonDefaults(t *testing.T) {
	c := &Config{Templates: []Template{{Source: "/t/a.tmpl", Dest: "/d/a.conf", Proxy: "nginx"}}}
	ct := c.ConsulTemplate(nil, nil)
	if *ct.Consul.Retry.Attempts != 0 || *ct.Consul.Retry.MaxBackoff != DefaultRetryMaxBackoff {
		t.Errorf("retry: attempts %d max %v", *ct.Consul.Retry.Attempts, *ct.Consul.Retry.MaxBackoff)
	}
	if *ct.TemplateErrFatal {
		t.Error("ErrFatal on")
	}
	tc := (*ct.Templates)[0]
	if *tc.ErrFatal || *tc.SandboxPath != "/t" || strings.Join(tc.FunctionDenylist, ",") != "plugin,writeToFile" {
		t.Errorf("template config: fatal=%v sandbox=%q deny=%v", *tc.ErrFatal, *tc.SandboxPath, tc.FunctionDenylist)
	}
	c.AllowUnsafeFunctions = true
	if tc := (*c.ConsulTemplate(nil, nil).Templates)[0]; len(tc.FunctionDenylist) != 0 {
		t.Errorf("deny list with --allow-unsafe-functions: %v", tc.FunctionDenylist)
	}
}

// TestExampleHCL loads the operator config shipped in examples/, so the
// example stays one the renderer accepts.
func TestExampleHCL(t *testing.T) {
	path := filepath.Join("..", "..", "..", "examples", "renderer", "consul-template.hcl")
	c := &Config{}
	if err := c.LoadHCL(path, "nginx", false); err != nil {
		t.Fatal(err)
	}
	if len(c.Templates) != 1 {
		t.Fatalf("want 1 template, got %d", len(c.Templates))
	}
	if _, err := os.Stat(c.Templates[0].Source); err != nil {
		t.Errorf("template source does not resolve relative to the HCL file: %v", err)
	}
	if c.WaitMin != 100*time.Millisecond || c.WaitMax != time.Second {
		t.Errorf("wait {} not taken: %v:%v", c.WaitMin, c.WaitMax)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "command is ignored") {
		t.Errorf("want one warning about the ignored command, got %q", c.Warnings)
	}
	if *c.ConsulTemplate(nil, nil).Consul.Retry.Attempts != 0 {
		t.Error("retries must never stop")
	}

	// The consul {} stanza of an operator's file is used when no
	// --consul-addr is given (parsing only: nothing is dialled).
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other.hcl")
	if err := os.WriteFile(other, []byte(strings.Replace(string(b), "127.0.0.1:8500", "consul.example:8500", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	c = &Config{}
	if err := c.LoadHCL(other, "nginx", false); err != nil {
		t.Fatal(err)
	}
	if got := *c.ConsulTemplate(nil, nil).Consul.Address; got != "consul.example:8500" {
		t.Errorf("consul {} address not taken: %q", got)
	}
}

// ConsulProbe reaches Consul with our flags (address, token) and wants a
// leader: a Consul without one cannot answer the runner's watches either.
func TestConsulProbe(t *testing.T) {
	var leader atomic.Value
	leader.Store(`"127.0.0.1:8300"`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/status/leader" || r.Header.Get("X-Consul-Token") != "s3cret" {
			http.Error(w, "unexpected "+r.URL.Path, http.StatusForbidden)
			return
		}
		io.WriteString(w, leader.Load().(string))
	}))
	defer srv.Close()
	c := &Config{Consul: Consul{Addr: strings.TrimPrefix(srv.URL, "http://"), Token: "s3cret"}}
	probe := c.ConsulProbe()
	if err := probe(t.Context()); err != nil {
		t.Fatalf("probe with a leader: %v", err)
	}
	leader.Store(`""`)
	if err := probe(t.Context()); err == nil {
		t.Error("probe without a leader: no error")
	}
	srv.Close()
	if err := probe(t.Context()); err == nil {
		t.Error("probe of a stopped Consul: no error")
	}
}
