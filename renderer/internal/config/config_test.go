package config

import (
	"strings"
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
