package pipeline

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul-template/renderer"

	"github.com/switchyard/switchyard/renderer/internal/policy"
)

// golden reads a rendered config of the shipped templates.
func golden(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "templates", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestNginxUpstreams(t *testing.T) {
	cases := []struct {
		name, conf string
		want       Counts
	}{
		{"golden two services", golden(t, "nginx-two-services.conf"), Counts{"svc_api": 1, "svc_web": 2}},
		{"golden empty", golden(t, "nginx-empty.conf"), Counts{}},
		{"golden ipv6", golden(t, "nginx-ipv6.conf"), Counts{"svc_web": 2}},
		// Commented instances and service names full of braces,
		// semicolons and "server {" stay comments.
		{"golden hostile", golden(t, "nginx-hostile.conf"), Counts{"svc_web": 1}},
		{"golden no passing instance", golden(t, "nginx-no-passing-instance.conf"), Counts{"svc_web": 1}},
		{"golden only unsafe instances", golden(t, "nginx-only-unsafe-instances.conf"), Counts{}},
		{"one line", "http { upstream a { server 10.0.0.1:80; server 10.0.0.2:80; } server { listen 80; } }", Counts{"a": 2}},
		{"ipv6 bracketed", "upstream v6 {\n server [fd00::1]:8080;\n server [::1]:80 backup;\n}\n", Counts{"v6": 2}},
		{"present but empty", "upstream a {\n    # server 10.0.0.1:80;\n    keepalive 4;\n}\n", Counts{"a": 0}},
		{"commented upstream", "# upstream ghost {\n# server 10.0.0.9:80;\n# }\nupstream a { server 10.0.0.1:80; }\n", Counts{"a": 1}},
		{"trailing comment", "upstream a {\n server 10.0.0.1:80; # server 10.0.0.2:80;\n}\n", Counts{"a": 1}},
		{"hash inside a word is not a comment", "upstream a {\n server 10.0.0.1:80#x;\n}\n", Counts{"a": 1}},
		{"quoted name and braces in strings", "upstream \"we}ird\" {\n server \"10.0.0.1:80\";\n}\nserver { return 200 \"} upstream x { server y; }\"; }\n", Counts{"we}ird": 1}},
		{"single quotes and escapes", "upstream 'a;b' {\n server 10.0.0.1:80;\n server 10.0.0.2\\;80;\n}\n", Counts{"a;b": 2}},
		{"variables do not open blocks", "server {\n set $x ${host}z;\n}\nupstream a {\n server 10.0.0.1:80;\n}\n", Counts{"a": 1}},
		{"server blocks and server_name are not backends", "server {\n server_name server;\n listen 80;\n}\n", Counts{}},
		{"stream and http with their own upstreams", "stream { upstream tcp { server 10.0.0.1:5432; } }\nhttp { upstream web { server 10.0.0.2:80; zone z 64k; } }\n", Counts{"tcp": 1, "web": 1}},
		{"server inside a nested block of an upstream does not count", "upstream a {\n server 10.0.0.1:80;\n weird {\n server 10.0.0.9:80;\n }\n}\n", Counts{"a": 1}},
		{"unbalanced close does not panic", "}\n}\nupstream a { server x:1; }", Counts{"a": 1}},
		// Issue 7 item 11: consul-template's placeholder for an empty
		// upstream and a server marked down serve nothing.
		{"placeholder is not a backend", "upstream a {\n server 127.0.0.1:65535; # force a 502\n}\n", Counts{"a": 0}},
		{"down is not a backend", "upstream a {\n server 10.0.0.1:80 down;\n server 10.0.0.2:80;\n}\n", Counts{"a": 1}},
		{"truncated file", "upstream a {\n server 10.0.0.1:80;\n server 10.0.0.2", Counts{"a": 1}},
		// Issue 9: Lua is not nginx syntax; its braces do not close the upstream.
		{"lua block is opaque", "upstream a {\n balancer_by_lua_block { f(\"}\") if #t > 0 then end }\n server 10.0.0.1:80;\n}\n", Counts{"a": 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := NginxUpstreams([]byte(c.conf)); !maps.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestHAProxyBackends(t *testing.T) {
	cases := []struct {
		name, conf string
		want       Counts
	}{
		{"golden two services", golden(t, "haproxy-two-services.cfg"), Counts{"no_service": 0, "svc_api": 1, "svc_web": 2}},
		{"golden empty", golden(t, "haproxy-empty.cfg"), Counts{"no_service": 0}},
		{"golden ipv6", golden(t, "haproxy-ipv6.cfg"), Counts{"no_service": 0, "svc_web": 2}},
		{"golden hostile", golden(t, "haproxy-hostile.cfg"), Counts{"no_service": 0, "svc_web": 1}},
		{"golden no passing instance", golden(t, "haproxy-no-passing-instance.cfg"), Counts{"no_service": 0, "svc_web": 1}},
		{"golden only unsafe instances", golden(t, "haproxy-only-unsafe-instances.cfg"), Counts{"no_service": 0}},
		{"disabled and placeholder are not backends", "backend b\n  server s1 10.0.0.1:80 disabled\n  server s2 127.0.0.1:65535\n  server s3 10.0.0.3:80 check\n", Counts{"b": 1}},
		{"listen section", "listen stats\n    bind :9000\n    server a 10.0.0.1:80\n", Counts{"stats": 1}},
		{"comments", "backend b\n  # server s0 10.0.0.1:80\n  server s1 10.0.0.2:80 # server s2 10.0.0.3:80\n#backend ghost\n#  server g 10.0.0.4:80\n", Counts{"b": 1}},
		{"quoted hash is not a comment", "backend b\n  server s0 10.0.0.1:80 check\n  http-request set-header X \"a#b\"\n  server s1 10.0.0.2:80\n", Counts{"b": 2}},
		{"escaped hash is not a comment", "backend b\n  server s\\#0 10.0.0.1:80\n", Counts{"b": 1}},
		{"ipv6", "backend b\n    server s0 [fd00::1]:8080 check\n    server s1 ipv6@fd00::2:80\n", Counts{"b": 2}},
		{"default-server and server-template do not count", "backend b\n  default-server inter 2s\n  server-template s 3 web.local:80\n", Counts{"b": 0}},
		{"peers and ring servers are not backends", "peers p\n  server h1 10.0.0.1:1024\nring r\n  server log 10.0.0.2:514\nbackend b\n  server s 10.0.0.3:80\n", Counts{"b": 1}},
		{"section ends the backend", "backend b\n  server s 10.0.0.1:80\nfrontend f\n  server x 10.0.0.9:80\n", Counts{"b": 1}},
		{"indentation does not matter", "backend b\nserver s 10.0.0.1:80\n  backend c\n  server t 10.0.0.2:80\n", Counts{"b": 1, "c": 1}},
		{"crlf", "backend b\r\n  server s 10.0.0.1:80\r\n", Counts{"b": 1}},
		{"server line needs an address", "backend b\n  server\n  server lonely\n", Counts{"b": 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := HAProxyBackends([]byte(c.conf)); !maps.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestSuspicious(t *testing.T) {
	three := Counts{"svc_alpha": 2, "svc_beta": 2, "svc_gamma": 2}
	cases := []struct {
		name          string
		before, after Counts
		max           float64
		hold          bool
		emptied       []string
	}{
		{"unchanged", three, three, 0.5, false, nil},
		{"one instance less", three, Counts{"svc_alpha": 2, "svc_beta": 2, "svc_gamma": 1}, 0.5, false, nil},
		{"growth", three, Counts{"svc_alpha": 4, "svc_beta": 2, "svc_gamma": 2}, 0.5, false, nil},
		{"new upstream", three, Counts{"svc_alpha": 2, "svc_beta": 2, "svc_gamma": 2, "svc_delta": 1}, 0.5, false, nil},
		// The e2e bug: 2 of 6 removed is 33% < 50%, but gamma is gone.
		{"one upstream dropped", three, Counts{"svc_alpha": 2, "svc_beta": 2}, 0.5, true, []string{"svc_gamma"}},
		{"one upstream present but empty", three, Counts{"svc_alpha": 2, "svc_beta": 2, "svc_gamma": 0}, 0.5, true, []string{"svc_gamma"}},
		{"two dropped, sorted", three, Counts{"svc_beta": 2}, 0.5, true, []string{"svc_alpha", "svc_gamma"}},
		{"everything dropped", three, Counts{}, 0.5, true, []string{"svc_alpha", "svc_beta", "svc_gamma"}},
		{"fraction only", Counts{"a": 4, "b": 4}, Counts{"a": 1, "b": 1}, 0.5, true, nil},
		{"fraction at the limit is normal", Counts{"a": 4}, Counts{"a": 2}, 0.5, false, nil},
		{"block that had none may go", Counts{"a": 2, "no_service": 0}, Counts{"a": 2}, 0.5, false, nil},
		{"nothing before", Counts{}, Counts{"a": 1}, 0.5, false, nil},
		{"rename counts as emptied", Counts{"old": 1}, Counts{"new": 1}, 0.5, true, []string{"old"}},
		{"whole-file count, all gone", Counts{"": 3}, Counts{"": 0}, 0.9, true, []string{""}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hold, emptied := policy.Suspicious(c.before, c.after, c.max)
			if hold != c.hold || !slices.Equal(emptied, c.emptied) {
				t.Errorf("hold=%v emptied=%q, want %v %q", hold, emptied, c.hold, c.emptied)
			}
		})
	}
}

// nginxConf renders upstreams like templates/nginx.conf.tmpl: n servers per
// named service, a service with 0 is left out, as the template does.
func nginxConf(svcs map[string]int) string {
	var b strings.Builder
	b.WriteString("http {\n    server {\n        listen 80 default_server;\n    }\n")
	for _, s := range slices.Sorted(maps.Keys(svcs)) {
		if svcs[s] == 0 {
			fmt.Fprintf(&b, "\n    # skipped service %s: no passing instance with a safe address\n", s)
			continue
		}
		fmt.Fprintf(&b, "\n    upstream svc_%s {\n", s)
		for i := range svcs[s] {
			fmt.Fprintf(&b, "        server 10.0.%d.%d:80 max_fails=1 fail_timeout=5s;\n", len(s), i+1)
		}
		fmt.Fprintf(&b, "        keepalive 16;\n    }\n\n    server {\n        server_name %s.*;\n    }\n", s)
	}
	b.WriteString("}\n")
	return b.String()
}

// The e2e scenario of an agent restart: services come back one by one. A
// render that lost one whole upstream is held although it keeps 4 of 6
// servers, and the next render that brings it back clears the hold.
func TestStaleGuardHoldsEmptiedUpstream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "nginx.conf")
		p := New(context.Background(), Options{MaxRemoval: 0.5, HoldDown: 30 * time.Second},
			[]Target{{Template: "t", Dest: dest, Proxy: "nginx", Backends: NginxUpstreams}})
		in := func(s string) *renderer.RenderInput { return &renderer.RenderInput{Path: dest, Contents: []byte(s)} }
		full := nginxConf(map[string]int{"alpha": 2, "beta": 2, "gamma": 2})
		if _, err := p.Render(in(full)); err != nil {
			t.Fatal(err)
		}
		res, err := p.Render(in(nginxConf(map[string]int{"alpha": 2, "beta": 2, "gamma": 0})))
		if err != nil || res.DidRender {
			t.Fatalf("render without gamma not held: %v %+v", err, res)
		}
		// A newer render that still lacks gamma stays held, on the same clock.
		time.Sleep(10 * time.Second)
		if res, _ := p.Render(in(nginxConf(map[string]int{"alpha": 1, "beta": 2}))); res.DidRender {
			t.Fatal("newer render without gamma applied")
		}
		if b, _ := os.ReadFile(dest); string(b) != full {
			t.Fatal("live file changed while held")
		}
		// Gamma is back: equal to the live file, the hold goes.
		if _, err := p.Render(in(full)); err != nil {
			t.Fatal(err)
		}
		if _, ok := p.NextHold(); ok {
			t.Error("hold survived the recovered render")
		}
		// Ordinary churn inside gamma is not held.
		if res, err := p.Render(in(nginxConf(map[string]int{"alpha": 2, "beta": 2, "gamma": 1}))); err != nil || !res.DidRender {
			t.Fatalf("one instance less held: %v %+v", err, res)
		}
	})
}

// A genuinely deregistered service goes after the hold-down, when it is
// still the latest render and Consul has a leader.
func TestStaleGuardAppliesEmptiedUpstreamAfterHoldDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "haproxy.cfg")
		p := New(context.Background(), Options{MaxRemoval: 0.5, HoldDown: 30 * time.Second},
			[]Target{{Template: "t", Dest: dest, Proxy: "haproxy", Backends: HAProxyBackends}})
		in := func(s string) *renderer.RenderInput { return &renderer.RenderInput{Path: dest, Contents: []byte(s)} }
		two := golden(t, "haproxy-two-services.cfg")
		// svc_api (1 server) goes; svc_web keeps its 2: 33% removed.
		noAPI := strings.Replace(two, "\nbackend svc_api\n    balance roundrobin\n    server 10.0.0.5:9000 10.0.0.5:9000 check inter 2s fall 1 rise 1\n", "", 1)
		if noAPI == two {
			t.Fatal("golden file changed shape")
		}
		p.Render(in(two))
		if res, _ := p.Render(in(noAPI)); res.DidRender {
			t.Fatal("emptied backend not held")
		}
		at, ok := p.NextHold()
		if !ok {
			t.Fatal("no hold")
		}
		time.Sleep(time.Until(at))
		answerAll(p, nil)
		if b, _ := os.ReadFile(dest); string(b) != noAPI {
			t.Fatalf("held render not applied after hold-down:\n%s", b)
		}
	})
}

func TestSweepRemovesOnlyOurLeftovers(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "nginx.conf")
	write := func(name string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stale := []string{".nginx.conf.staged-123", ".nginx.conf.staged-4294967295"}
	keep := []string{
		"nginx.conf",
		".nginx.conf.staged-",         // no digits: not CreateTemp's
		".nginx.conf.staged-12ab",     // not digits
		".nginx.conf.staged-1.bak",    // an operator's copy
		"nginx.conf.staged-123",       // not hidden
		".other.conf.staged-123",      // another destination
		".nginx.conf.old.staged-123",  // another destination
		".xnginx.conf.staged-123",     // another destination
		".nginx.conf.staged-99.swp",   // an editor's file
		".nginx.conf.generations.tmp", // not ours at all
	}
	for _, n := range append(slices.Clone(stale), keep...) {
		write(n)
	}
	if err := os.Mkdir(filepath.Join(dir, ".nginx.conf.staged-777"), 0o755); err != nil {
		t.Fatal(err)
	}
	keep = append(keep, ".nginx.conf.staged-777") // a directory
	if err := os.Symlink(filepath.Join(dir, "nginx.conf"), filepath.Join(dir, ".nginx.conf.staged-555")); err != nil {
		t.Fatal(err)
	}
	keep = append(keep, ".nginx.conf.staged-555") // a symlink
	// In flight in another (live) renderer: it holds the staging lock.
	inflight, release, err := stage(dest, []byte("new"), 0, keepOwner)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	keep = append(keep, filepath.Base(inflight))

	New(context.Background(), Options{}, []Target{{Template: "t", Dest: dest}})
	for _, n := range stale {
		if _, err := os.Lstat(filepath.Join(dir, n)); !os.IsNotExist(err) {
			t.Errorf("%s not removed: %v", n, err)
		}
	}
	for _, n := range keep {
		if _, err := os.Lstat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s removed: %v", n, err)
		}
	}

	// Plan mode changes nothing, leftovers included.
	write(stale[0])
	NewPlan(context.Background(), &strings.Builder{}, time.Second, []Target{{Template: "t", Dest: dest}})
	if _, err := os.Lstat(filepath.Join(dir, stale[0])); err != nil {
		t.Errorf("plan mode removed a leftover: %v", err)
	}
}

// A kill -9 between recording a generation and the rename: the leftover
// staged file and that generation share an inode. The next start removes
// both, so a rollback never restores a config that never served.
func TestSweepDropsGenerationThatNeverWentLive(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "nginx.conf")
	tg := []Target{{Template: "t", Dest: dest, Keep: 3}}
	p := New(context.Background(), Options{}, tg)
	for i := range 4 {
		if _, err := render(t, p, dest, fmt.Sprintf("gen %d\n", i)); err != nil {
			t.Fatal(err)
		}
	}
	gens, _ := generations(dest)
	if len(gens) != 3 {
		t.Fatalf("generations %v, want 3", gens)
	}
	// Simulate the killed swap: stage, record, no rename, no release
	// (the kernel drops the lock of a killed process; closing does too).
	staged, release, err := stage(dest, []byte("never live\n"), 0, keepOwner)
	if err != nil {
		t.Fatal(err)
	}
	next := gens[len(gens)-1] + 1
	if err := os.Link(staged, genPath(dest, next)); err != nil {
		t.Fatal(err)
	}
	release()

	p = New(context.Background(), Options{}, tg)
	if _, err := os.Lstat(staged); !os.IsNotExist(err) {
		t.Errorf("staged leftover not removed: %v", err)
	}
	if after, _ := generations(dest); !slices.Equal(after, gens) {
		t.Errorf("generations %v, want %v (the never-live one dropped)", after, gens)
	}
	// A restarted renderer takes the live generation as proved: a failed
	// reload goes back to it.
	if _, err := render(t, p, dest, "gen 4\n"); err != nil {
		t.Fatal(err)
	}
	if out := p.Load("", func(Change) error { return fmt.Errorf("reload failed") }); out.RollbackErr != nil || len(out.Restored) != 1 {
		t.Fatalf("load: %+v", out)
	}
	if b, _ := os.ReadFile(dest); string(b) != "gen 3\n" {
		t.Errorf("rolled back to %q, want %q", b, "gen 3\n")
	}
}

// Pruning happens before a generation is recorded: never more than Keep.
func TestSwapKeepsAtMostKeep(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "proxy.conf")
	if err := os.WriteFile(dest, []byte("hand written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := New(context.Background(), Options{}, []Target{{Template: "t", Dest: dest, Keep: 2}})
	for i := range 5 {
		if _, err := render(t, p, dest, fmt.Sprintf("r%d\n", i)); err != nil {
			t.Fatal(err)
		}
		if gens, _ := generations(dest); len(gens) > 2 {
			t.Fatalf("after render %d: %d generations kept, want at most 2", i, len(gens))
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".proxy.conf.staged-*")); len(left) != 0 {
		t.Errorf("staged files left: %v", left)
	}
}
