package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/membership"
	"github.com/switchyard/switchyard/renderer/internal/nginxconf"
	"github.com/switchyard/switchyard/scripts/testenv"
)

// shippedLua is the init_by_lua_block of the shipped template: the Lua
// these tests run is the Lua users run.
func shippedLua(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../../templates/nginx.conf.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte("init_by_lua_block {"))
	if i < 0 {
		t.Fatal("no init_by_lua_block in templates/nginx.conf.tmpl")
	}
	for _, tok := range nginxconf.Tokenize(b[i:]) {
		if tok.Kind == nginxconf.Lua {
			return tok.Val
		}
	}
	t.Fatal("the template's init_by_lua_block does not end")
	return ""
}

// luaModuleLines are the load_module lines of Debian's Lua module; a
// missing module fails under CI.
func luaModuleLines(t *testing.T, bin string) string {
	t.Helper()
	out, _ := exec.Command(bin, "-V").CombinedOutput()
	dir := "/usr/lib/nginx/modules"
	if m := regexp.MustCompile(`--modules-path=(\S+)`).FindSubmatch(out); m != nil {
		dir = string(m[1])
	}
	lua := filepath.Join(dir, "ngx_http_lua_module.so")
	_, err := os.Stat(lua)
	testenv.Need(t, err == nil, "nginx Lua module "+lua+" (Debian: libnginx-mod-http-lua, lua-resty-core)")
	return "load_module " + filepath.Join(dir, "ndk_http_module.so") + ";\nload_module " + lua + ";\n"
}

// luaSite is an nginx with one dynamic upstream, svc_web, in the shape
// of the shipped template, and its endpoint on api.
type luaSite struct {
	t                 *testing.T
	n                 *Nginx
	conf, listen, api string
	head, lua         string
}

func newLuaSite(t *testing.T) *luaSite {
	t.Helper()
	bin := testenv.NginxBinary(t)
	prefix, conf, listen := confIn(t, "nginx.conf")
	s := &luaSite{t: t, conf: conf, listen: listen, api: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		head: luaModuleLines(t, bin), lua: shippedLua(t)}
	s.n = &Nginx{Bin: bin, Prefix: prefix, Config: conf, Supervise: true, Timeout: 5 * time.Second,
		Log: slog.New(slog.DiscardHandler)}
	// The Lua must never fail, nor warn, at run time: nginx logs it (and
	// answers 500 or 502 for a failure).
	t.Cleanup(func() {
		b, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "lua") && (strings.Contains(l, "[error]") || strings.Contains(l, "[alert]") || strings.Contains(l, "[warn]")) {
				t.Errorf("Lua error in nginx's log: %s", l)
			}
		}
	})
	return s
}

// config renders the site with servers (the lines inside svc_web) and
// extra directives in http.
func (s *luaSite) config(servers []string, extra string) string {
	var up strings.Builder
	for _, l := range servers {
		up.WriteString("    server " + l + " max_fails=1 fail_timeout=5s;\n")
	}
	return s.head + `pid nginx.pid;
error_log error.log warn;
worker_processes 2;
worker_shutdown_timeout 5s;
events {}
http {
  client_body_temp_path cbt; proxy_temp_path pt; fastcgi_temp_path ft; uwsgi_temp_path ut; scgi_temp_path st;
  access_log off;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_connect_timeout 1s;
  proxy_next_upstream error timeout http_502;
  proxy_next_upstream_tries 3;
  ` + extra + `
  lua_shared_dict switchyard 4m;
  init_by_lua_block {` + s.lua + `}
  upstream svc_web {
` + up.String() + `    balancer_by_lua_block { switchyard.balance("svc_web") }
    keepalive 8;
  }
  server { listen ` + s.listen + `; location / { proxy_pass http://svc_web; } }
  server {
    listen ` + s.api + `;
    location = /switchyard/upstreams { content_by_lua_block { switchyard.api() } }
  }
}
`
}

// start writes config and runs nginx on it as our child.
func (s *luaSite) start(config string) {
	s.t.Helper()
	write(s.t, s.conf, config)
	startServing(s.t, s.n, s.conf, s.listen, "backend")
}

// patch writes live as the file and patches nginx from running to it.
func (s *luaSite) patch(running, live string) (bool, error) {
	s.t.Helper()
	write(s.t, s.conf, live)
	patched, err := s.n.Patch(context.Background(), map[string][]byte{s.conf: []byte(running)}, map[string][]byte{s.conf: []byte(live)})
	agreesWithPatch(s.t, s.n.RuntimeOnly, running, live, patched, err)
	return patched, err
}

// agreesWithPatch: the pipeline lets a render skip validation on its way
// in only when RuntimeOnly says Patch applies it; a change Patch calls
// structural must be validated first.
func agreesWithPatch(t *testing.T, runtimeOnly func(live, next []byte) bool, running, live string, patched bool, err error) {
	t.Helper()
	if err != nil {
		return // a failed apply says nothing of the change's kind
	}
	if got := runtimeOnly([]byte(running), []byte(live)); got != patched {
		t.Errorf("RuntimeOnly = %v, Patch applied at runtime = %v", got, patched)
	}
}

func (s *luaSite) workers() map[int]bool {
	s.t.Helper()
	pid, err := s.n.masterPID()
	if err != nil {
		s.t.Fatal(err)
	}
	return children(pid)
}

// tally sends n requests, each on a new connection so that both workers
// answer, and counts the answers; an error or a non-200 counts as "fail".
func (s *luaSite) tally(n int) map[string]int {
	s.t.Helper()
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	out := map[string]int{}
	for range n {
		resp, err := cl.Get("http://" + s.listen + "/")
		if err != nil {
			out["fail"]++
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			out["fail"]++
			continue
		}
		out[strings.TrimPrefix(strings.TrimSpace(string(b)), "backend ")]++
	}
	return out
}

// onlyFrom waits until n requests in a row are answered by exactly the
// backends in want, each at least once.
func (s *luaSite) onlyFrom(n int, want ...string) {
	s.t.Helper()
	testenv.Eventually(s.t, 5*time.Second, func() error {
		got := s.tally(n)
		keys := make(map[string]bool)
		for k := range got {
			keys[k] = true
		}
		for _, w := range want {
			if !keys[w] {
				return fmt.Errorf("%d requests: %v, want only %v", n, got, want)
			}
			delete(keys, w)
		}
		if len(keys) > 0 {
			return fmt.Errorf("%d requests: %v, want only %v", n, got, want)
		}
		return nil
	})
}

// backendSrv is an HTTP backend on 127.0.0.1 that answers "backend NAME"
// and counts the connections it accepted.
type backendSrv struct {
	addr  string
	conns atomic.Int64
}

func newBackend(t *testing.T, name string) *backendSrv {
	t.Helper()
	b := &backendSrv{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "backend %s\n", name)
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			b.conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	b.addr = srv.Listener.Addr().String()
	return b
}

// deadAddr is an address on 127.0.0.1 where nothing listens.
func deadAddr(t *testing.T) string {
	return fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
}

// TestNginxPatchMembership: issue 9. A membership change reaches the
// running nginx through the endpoint: the new instance serves and the
// removed one gets nothing more, with the same worker processes (no
// reload). Weights, down, retries past a dead server and keep-alive
// connections to the upstreams work on a pushed list as on the file's.
func TestNginxPatchMembership(t *testing.T) {
	s := newLuaSite(t)
	a, b, c := newBackend(t, "A"), newBackend(t, "B"), newBackend(t, "C")
	cfg1 := s.config([]string{a.addr, b.addr}, "")
	s.start(cfg1)
	s.onlyFrom(20, "A", "B")
	workers := s.workers()

	cfg2 := s.config([]string{b.addr, c.addr}, "")
	if ok, err := s.patch(cfg1, cfg2); !ok || err != nil {
		t.Fatalf("Patch = %v, %v; want applied", ok, err)
	}
	// Verified means in force: the very next requests see it.
	if got := s.tally(30); got["A"] != 0 || got["fail"] != 0 || got["C"] == 0 {
		t.Errorf("right after the patch: %v, want B and C only", got)
	}
	if !maps.Equal(s.workers(), workers) {
		t.Errorf("workers %v, were %v: nginx reloaded", s.workers(), workers)
	}

	t.Run("weights", func(t *testing.T) {
		cfg3 := s.config([]string{b.addr + " weight=3", c.addr}, "")
		if ok, err := s.patch(cfg2, cfg3); !ok || err != nil {
			t.Fatalf("Patch = %v, %v", ok, err)
		}
		got := s.tally(80)
		t.Logf("weight 3:1 over 80 requests: %v", got)
		if got["fail"] != 0 || got["B"] < 2*got["C"] || got["C"] == 0 {
			t.Errorf("weight 3:1 gave %v", got)
		}
		cfg4 := s.config([]string{b.addr, c.addr + " down", deadAddr(t)}, "")
		if ok, err := s.patch(cfg3, cfg4); !ok || err != nil {
			t.Fatalf("Patch = %v, %v", ok, err)
		}
		// C is down; the dead server is retried past (set_more_tries).
		if got := s.tally(30); got["B"] != 30 {
			t.Errorf("down and dead servers: %v, want B only, no failure", got)
		}
	})

	t.Run("keep-alive to the upstream", func(t *testing.T) {
		cfg5 := s.config([]string{c.addr}, "")
		if ok, err := s.patch(s.current(), cfg5); !ok || err != nil {
			t.Fatalf("Patch = %v, %v", ok, err)
		}
		before := c.conns.Load()
		if got := s.tally(60); got["C"] != 60 {
			t.Fatalf("%v", got)
		}
		// Two workers, each with its own idle connections: a handful, not 60.
		if n := c.conns.Load() - before; n > 6 {
			t.Errorf("%d new connections to the backend for 60 requests: keepalive does not work", n)
		}
	})
	if !maps.Equal(s.workers(), workers) {
		t.Errorf("workers changed over the patches: nginx reloaded")
	}
}

// current is the file as it is now: the running config after a patch.
func (s *luaSite) current() string {
	s.t.Helper()
	b, err := os.ReadFile(s.conf)
	if err != nil {
		s.t.Fatal(err)
	}
	return string(b)
}

// TestNginxPatchStructural: a change beyond server lines is not applied
// at runtime: Patch says so without touching nginx, and a reload applies
// it. A config without the endpoint reloads for any change; a change of
// comments alone needs nothing.
func TestNginxPatchStructural(t *testing.T) {
	s := newLuaSite(t)
	a, b := newBackend(t, "A"), newBackend(t, "B")
	cfg1 := s.config([]string{a.addr}, "")
	s.start(cfg1)

	cfg2 := s.config([]string{b.addr}, "server_tokens off;")
	if ok, err := s.patch(cfg1, cfg2); ok || err != nil {
		t.Fatalf("Patch of a structural change = %v, %v; want false, nil", ok, err)
	}
	dump, err := readNginxLists(context.Background(), s.api)
	if err != nil || len(dump.lists) != 0 {
		t.Fatalf("something was pushed: %+v %v", dump, err)
	}
	reloadServes(t, s.n, s.conf, cfg2, s.listen, "backend B")

	if ok, err := s.patch(cfg2, "# a comment\n"+cfg2); !ok || err != nil {
		t.Errorf("comment-only change: %v, %v; want applied (nothing to do)", ok, err)
	}
	noEndpoint := strings.Replace(cfg2, "location = /switchyard/upstreams", "location = /elsewhere", 1)
	other := strings.Replace(noEndpoint, b.addr, a.addr, 1)
	if ok, err := s.n.Patch(context.Background(), map[string][]byte{s.conf: []byte(noEndpoint)},
		map[string][]byte{s.conf: []byte(other)}); ok || err != nil {
		t.Errorf("no endpoint: %v, %v; want false, nil", ok, err)
	}
}

// TestNginxPatchFailsThenReload: a push that fails (the endpoint answers
// an error, or nothing listens where the config says) is an error, so the
// supervisor reloads; the reload serves the file.
func TestNginxPatchFailsThenReload(t *testing.T) {
	s := newLuaSite(t)
	a, b := newBackend(t, "A"), newBackend(t, "B")
	broken := func(cfg string) string { // the endpoint location answers 500
		return strings.Replace(cfg, "content_by_lua_block { switchyard.api() }", "return 500;", 1)
	}
	cfg1 := broken(s.config([]string{a.addr}, ""))
	s.start(cfg1)
	cfg2 := broken(s.config([]string{b.addr}, ""))
	ok, err := s.patch(cfg1, cfg2)
	if ok || err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("Patch to an erroring endpoint = %v, %v; want an error naming the 500", ok, err)
	}
	reloadServes(t, s.n, s.conf, cfg2, s.listen, "backend B")

	// The running config names an endpoint nothing listens on.
	gone := strings.Replace(cfg2, s.api, deadAddr(t), 1)
	ok, err = s.n.Patch(context.Background(), map[string][]byte{s.conf: []byte(gone)},
		map[string][]byte{s.conf: []byte(strings.Replace(gone, b.addr, a.addr, 1))})
	if ok || err == nil {
		t.Fatalf("Patch to an absent endpoint = %v, %v; want an error", ok, err)
	}
}

// TestNginxReloadAndRestartServeTheFile: the file is the truth. A list
// pushed before a reload is not used by the new workers (it belongs to
// the old config generation), and an nginx started again from the file
// serves the file's members, which a runtime apply had written there.
func TestNginxReloadAndRestartServeTheFile(t *testing.T) {
	s := newLuaSite(t)
	a, b := newBackend(t, "A"), newBackend(t, "B")
	cfg1 := s.config([]string{a.addr}, "")
	s.start(cfg1)
	cfg2 := s.config([]string{b.addr}, "")
	if ok, err := s.patch(cfg1, cfg2); !ok || err != nil {
		t.Fatalf("Patch = %v, %v", ok, err)
	}
	s.onlyFrom(10, "B")

	// A reload of a file that says A (a rollback, an operator's edit):
	// the pushed B is not in force over it.
	cfg3 := s.config([]string{a.addr}, "server_tokens off;")
	reloadServes(t, s.n, s.conf, cfg3, s.listen, "backend A")
	s.onlyFrom(20, "A")
	dump, err := readNginxLists(context.Background(), s.api)
	if err != nil || dump.lists["svc_web"].generation == dump.generation {
		t.Errorf("after the reload: %+v %v; want the old list tagged with the old generation", dump, err)
	}

	// A runtime apply to the new generation, then nginx stops and starts
	// again from the file: the same members, with nothing pushed.
	if ok, err := s.patch(cfg3, s.config([]string{b.addr}, "server_tokens off;")); !ok || err != nil {
		t.Fatalf("Patch after the reload = %v, %v", ok, err)
	}
	s.onlyFrom(10, "B")
	if err := s.n.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	startServing(t, s.n, s.conf, s.listen, "backend B")
	s.onlyFrom(20, "B")
	if dump, err := readNginxLists(context.Background(), s.api); err != nil || len(dump.lists) != 0 {
		t.Errorf("after a restart: %+v %v; want no pushed list", dump, err)
	}
}

func TestNginxEndpointDiscovery(t *testing.T) {
	loc := "location = /switchyard/upstreams { content_by_lua_block { switchyard.api() } }"
	for _, tc := range []struct {
		name, conf, want string
	}{
		{"loopback", "http { server { listen 127.0.0.1:9180; " + loc + " } }", "127.0.0.1:9180"},
		{"IPv6 loopback and 127.x", "http { server { listen [::1]:9180; listen 127.0.0.2:9180; " + loc + " } }", "[::1]:9180"},
		{"any address", "http { server { listen 9180; " + loc + " } }", ""},
		{"one listen not loopback", "http { server { listen 127.0.0.1:9180; listen 10.0.0.1:9180; " + loc + " } }", ""},
		{"a name", "http { server { listen localhost:9180; " + loc + " } }", ""},
		{"no listen", "http { server { " + loc + " } }", ""},
		{"another location", "http { server { listen 127.0.0.1:9180; location /switchyard/upstreams { } } }", ""},
		{"commented", "http { server { listen 127.0.0.1:9180; # " + loc + "\n } }", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := nginxEndpoint(map[string][]byte{"/etc/nginx/nginx.conf": []byte(tc.conf)})
			if got != tc.want || ok != (tc.want != "") {
				t.Errorf("got %q %v, want %q", got, ok, tc.want)
			}
		})
	}
}

func TestNginxDumpCheck(t *testing.T) {
	pools := []membership.NginxPool{{Name: "svc_web", Servers: []membership.NginxServer{
		{Server: membership.Server{Addr: "10.0.0.1:80"}, MaxFails: 1, FailTimeout: 5 * time.Second},
		{Server: membership.Server{Addr: "[fd00::1]:80", Weight: 2, Down: true}, MaxFails: 0, FailTimeout: 500 * time.Millisecond},
	}}}
	push := encodeNginxPush(pools)
	if want := "upstream svc_web\nserver 10.0.0.1:80 1 1 5000 up\nserver [fd00::1]:80 2 0 500 down\n"; push != want {
		t.Fatalf("push %q, want %q", push, want)
	}
	list := strings.TrimPrefix(push, "upstream svc_web\n")
	for _, tc := range []struct {
		name, body, err string
	}{
		{"as pushed", "generation 4 4\nupstream svc_api 3\nserver 10.1.1.1:80 1 1 10000 up\nupstream svc_web 4\n" + list, ""},
		{"old generation", "generation 4 4\nupstream svc_web 3\n" + list, "generation 3"},
		{"answered by an old worker", "generation 5 4\nupstream svc_web 5\n" + list, "runs config generation 4"},
		{"missing", "generation 4 4\n", "no list"},
		{"different", "generation 4 4\nupstream svc_web 4\nserver 10.0.0.1:80 1 1 5000 up\n", "stored list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := parseNginxDump(tc.body)
			if err != nil {
				t.Fatal(err)
			}
			err = d.check(pools)
			if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("check = %v, want %q", err, tc.err)
			}
		})
	}
}
