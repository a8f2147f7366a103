package pipeline

import (
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestCaddyUpstreams(t *testing.T) {
	for _, c := range []struct {
		name, file string
		want       Counts
	}{
		{"one-line pools", `
:80 {
	reverse_proxy /api/* 10.0.0.1:80 10.0.0.2:80
	reverse_proxy 10.0.0.3:80
}`, Counts{":80 > /api/* #1": 2, ":80 #1": 1}},
		{"block with to and dynamic srv", `
{
	admin off
}
http://:8080 {
	@svc_web header_regexp Host (?i)^web\.
	handle @svc_web {
		reverse_proxy 10.0.0.1:1 10.0.0.2:2 {
			to 10.0.0.3:3
			dynamic srv web.8080.svc.switchyard. {
				refresh 100ms
			}
			lb_try_duration 2s
		}
	}
	handle @svc_api {
		reverse_proxy {
			to 10.0.0.9:9
		}
	}
	handle {
		respond "no" 503
	}
}`, Counts{"srv web.8080.svc.switchyard.": 3, "http://:8080 > handle @svc_api #1": 1}},
		{"quotes, braces and comments are not structure", `
a.example {
	# reverse_proxy 10.0.0.1:1 {
	respond "} reverse_proxy 10.0.0.2:2 {" 200
	header X-A "{"
	header X-B ` + "`}`" + `
	reverse_proxy 10.0.0.3:3 # 10.0.0.4:4
}`, Counts{"a.example #1": 1}},
		{"a pool without static upstreams counts 0", `
:80 {
	reverse_proxy {
		dynamic srv x.svc.
	}
}`, Counts{"srv x.svc.": 0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := CaddyUpstreams([]byte(c.file)); !maps.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

var srvName = regexp.MustCompile(`dynamic srv (\S+)`)

// The shipped template's goldens: every pool is named after its dynamic
// srv name and counts the instances the render wrote.
func TestCaddyUpstreamsShippedGoldens(t *testing.T) {
	files, _ := filepath.Glob("../../../templates/testdata/*.Caddyfile")
	if len(files) == 0 {
		t.Fatal("no Caddy goldens in templates/testdata")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got := CaddyUpstreams(b)
		names := map[string]bool{} // a service routed by several hosts is one pool
		for _, m := range srvName.FindAllStringSubmatch(string(b), -1) {
			names[m[1]] = true
		}
		if len(got) != len(names) {
			t.Errorf("%s: %d pools %v, want %d (one per dynamic srv name)", filepath.Base(f), len(got), got, len(names))
		}
		for name, n := range got {
			if !strings.HasPrefix(name, "srv ") || n == 0 {
				t.Errorf("%s: pool %q with %d upstreams", filepath.Base(f), name, n)
			}
		}
	}
}

// A render that leaves a Caddy pool without upstreams is what the stale
// guard holds: Emptied names the pool.
func TestCaddyUpstreamsEmptied(t *testing.T) {
	site := func(web string) string {
		return ":80 {\n\t@web host web.example\n\thandle @web {\n\t\treverse_proxy " + web +
			" {\n\t\t\tdynamic srv web.svc.\n\t\t}\n\t}\n\treverse_proxy /api/* 10.0.0.9:9\n}\n"
	}
	before := CaddyUpstreams([]byte(site("10.0.0.1:1 10.0.0.2:2")))
	after := CaddyUpstreams([]byte(site("")))
	if got := Emptied(before, after); len(got) != 1 || got[0] != "srv web.svc." {
		t.Errorf("emptied %v, want [srv web.svc.]", got)
	}
	if got := Emptied(before, CaddyUpstreams([]byte(site("10.0.0.2:2")))); len(got) != 0 {
		t.Errorf("one upstream left, emptied %v", got)
	}
}
