package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/membership"
	"github.com/switchyard/switchyard/scripts/testenv"
)

// caddyBackend is an HTTP server on 127.0.0.1 that answers its name and
// counts its requests.
type caddyBackend struct {
	name string
	addr string
	hits atomic.Int64
}

func newCaddyBackend(t *testing.T, name string) *caddyBackend {
	b := &caddyBackend{name: name}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		b.hits.Add(1)
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	b.addr = srv.Listener.Addr().String()
	return b
}

// caddyRig is a real Caddy run by the Caddy proxy type, with one pool
// "web" served at runtime and, when static is set, one pool "static"
// that has no dynamic source.
type caddyRig struct {
	c                    *Caddy
	conf                 string
	port, admin, resolve string
}

func newCaddyRig(t *testing.T) *caddyRig {
	bin := testenv.CaddyBinary(t)
	dir := t.TempDir()
	t.Setenv("HOME", dir) // caddy keeps state under $HOME
	t.Setenv("XDG_DATA_HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", dir)
	ports, err := testenv.PickPorts(3)
	if err != nil {
		t.Fatal(err)
	}
	r := &caddyRig{conf: filepath.Join(dir, "Caddyfile"), port: fmt.Sprint(ports[0]),
		admin: fmt.Sprintf("127.0.0.1:%d", ports[1]), resolve: fmt.Sprintf("127.0.0.1:%d", ports[2])}
	logs := &lockedBuffer{}
	r.c = &Caddy{Bin: bin, Config: r.conf, Admin: r.admin, Timeout: 15 * time.Second, Supervise: true,
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = r.c.Stop(ctx)
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	return r
}

// lockedBuffer collects a log that goroutines outliving the test may
// still write to: it is printed only when the test failed.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// config renders the Caddyfile for web's members; extra is more site
// body (a structural change), static the members of a pool without a
// dynamic source.
func (r *caddyRig) config(web []*caddyBackend, static []*caddyBackend, extra string) []byte {
	pool := func(bs []*caddyBackend) string {
		var s []string
		for _, b := range bs {
			s = append(s, b.addr)
		}
		return strings.Join(s, " ")
	}
	staticRoute := ""
	if len(static) > 0 {
		staticRoute = fmt.Sprintf("\t@static header_regexp Host (?i)^static\\.\n\thandle @static {\n\t\treverse_proxy %s\n\t}\n", pool(static))
	}
	return fmt.Appendf(nil, `{
	admin %[1]s
	auto_https off
	grace_period 2s
}
http://:%[2]s {
	bind 127.0.0.1
	@web header_regexp Host (?i)^web\.
	handle @web {
		reverse_proxy %[3]s {
			dynamic srv web.%[2]s.svc.switchyard. {
				resolvers %[4]s
				refresh 50ms
			}
			transport http {
				resolvers %[4]s
			}
		}
	}
%[5]s%[6]s	handle {
		respond "no route" 503
	}
}
`, r.admin, r.port, pool(web), r.resolve, staticRoute, extra)
}

func (r *caddyRig) write(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	if err := os.WriteFile(r.conf, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{r.conf: b}
}

// keepConn is one HTTP/1.1 keep-alive connection to Caddy. A config load
// shuts Caddy's HTTP servers down, which closes every idle connection: a
// request that still gets its answer on the same connection, without
// "Connection: close", proves that no load happened since the last one.
type keepConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKeep(t *testing.T, addr string) *keepConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepConn{c: c, br: bufio.NewReader(c)}
}

var errConnClosing = errors.New("caddy closes the connection")

// get sends one request for host and returns the body.
func (k *keepConn) get(host string) (string, error) {
	if err := k.c.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return "", err
	}
	if _, err := fmt.Fprintf(k.c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return "", err
	case resp.Close:
		return string(b), errConnClosing
	case resp.StatusCode != http.StatusOK:
		return string(b), fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return string(b), nil
}

// mustGet is get on a connection that must stay open.
func (k *keepConn) mustGet(t *testing.T, host string) string {
	t.Helper()
	body, err := k.get(host)
	if err != nil {
		t.Fatalf("request on the kept connection: %v (body %q)", err, body)
	}
	return body
}

// TestCaddyPatchMembership: a membership change is applied at runtime:
// the new member serves and the removed one gets no more requests, while
// one keep-alive connection stays open across it (no config load), and
// Caddy's process is the same.
func TestCaddyPatchMembership(t *testing.T) {
	r := newCaddyRig(t)
	b0, b1, b2 := newCaddyBackend(t, "b0"), newCaddyBackend(t, "b1"), newCaddyBackend(t, "b2")
	v1 := r.write(t, r.config([]*caddyBackend{b0, b1}, nil, ""))
	ctx := t.Context()
	if err := r.c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pid := r.c.child.pid()
	k := dialKeep(t, "127.0.0.1:"+r.port)
	seen := map[string]bool{}
	for range 20 {
		seen[k.mustGet(t, "web.localhost")] = true
	}
	if !seen["b0"] || !seen["b1"] || seen["b2"] {
		t.Fatalf("before the change, answers from %v, want b0 and b1", seen)
	}

	v2 := r.write(t, r.config([]*caddyBackend{b1, b2}, nil, ""))
	runtimeOnly := r.c.RuntimeOnly(v1[r.c.Config], v2[r.c.Config])
	patched, err := r.c.Patch(ctx, v1, v2)
	if err != nil || !patched || !runtimeOnly {
		t.Fatalf("Patch = %v, %v, RuntimeOnly %v; want true, nil, true", patched, err, runtimeOnly)
	}
	// Caddy sees the answer within its refresh (50ms): b2 serves, then
	// b0 gets nothing more.
	testenv.Eventually(t, 5*time.Second, func() error {
		if body := k.mustGet(t, "web.localhost"); body != "b2" {
			return fmt.Errorf("answer from %s", body)
		}
		return nil
	})
	before := b0.hits.Load()
	for range 50 {
		if body := k.mustGet(t, "web.localhost"); body == "b0" {
			t.Fatal("the removed member still serves")
		}
	}
	if n := b0.hits.Load() - before; n != 0 {
		t.Errorf("the removed member got %d requests", n)
	}
	if r.c.child.pid() != pid {
		t.Errorf("caddy restarted: pid %d, was %d", r.c.child.pid(), pid)
	}

	// The control: a reload is seen by the same observable.
	if err := r.c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if _, err := k.get("web.localhost"); err == nil {
			return errors.New("the kept connection survived a config load")
		}
		return nil
	})
}

// TestCaddyAdminPatchClosesConnections is why Patch does not use Caddy's
// admin API: a PATCH of one handler's upstreams provisions the whole
// config anew, like a reload, and closes the idle keep-alive connections.
func TestCaddyAdminPatchClosesConnections(t *testing.T) {
	r := newCaddyRig(t)
	b0, b1 := newCaddyBackend(t, "b0"), newCaddyBackend(t, "b1")
	r.write(t, r.config([]*caddyBackend{b0}, nil, ""))
	ctx := t.Context()
	if err := r.c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	k := dialKeep(t, "127.0.0.1:"+r.port)
	k.mustGet(t, "web.localhost")
	path := "/config/apps/http/servers/srv0/routes/0/handle/0/routes/0/handle/0/upstreams"
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, "http://"+r.admin+path, strings.NewReader(`[{"dial":"`+b1.addr+`"}]`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PATCH %s: %s", path, resp.Status)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if _, err := k.get("web.localhost"); err == nil {
			return errors.New("the kept connection survived an admin API PATCH")
		}
		return nil
	})
}

// TestCaddyPatchStructural: anything but the upstreams of a served pool
// is left to a reload, and Caddy is not touched.
func TestCaddyPatchStructural(t *testing.T) {
	r := newCaddyRig(t)
	b0, b1 := newCaddyBackend(t, "b0"), newCaddyBackend(t, "b1")
	v1 := r.write(t, r.config([]*caddyBackend{b0}, []*caddyBackend{b0}, ""))
	ctx := t.Context()
	if err := r.c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	k := dialKeep(t, "127.0.0.1:"+r.port)
	k.mustGet(t, "web.localhost")
	for name, v2 := range map[string][]byte{
		"route added":         r.config([]*caddyBackend{b0}, []*caddyBackend{b0}, "\trespond /health \"ok\" 200\n"),
		"static pool changed": r.config([]*caddyBackend{b0}, []*caddyBackend{b1}, ""),
		"both":                r.config([]*caddyBackend{b1}, []*caddyBackend{b1}, ""),
	} {
		t.Run(name, func(t *testing.T) {
			live := r.write(t, v2)
			patched, err := r.c.Patch(ctx, v1, live)
			if err != nil || patched {
				t.Fatalf("Patch = %v, %v; want false, nil", patched, err)
			}
			if r.c.RuntimeOnly(v1[r.c.Config], live[r.c.Config]) {
				t.Error("RuntimeOnly = true for a structural change: it would skip validation")
			}
			if body := k.mustGet(t, "web.localhost"); body != "b0" {
				t.Errorf("web answered from %s, want b0: a structural change must not reach Caddy", body)
			}
		})
	}
	// A file that appears only in live (no running bytes) is structural.
	if patched, err := r.c.Patch(ctx, map[string][]byte{}, v1); patched || err != nil {
		t.Errorf("Patch without running bytes = %v, %v; want false, nil", patched, err)
	}
}

// TestCaddyPatchFails: when Caddy does not run the config the files
// describe, or does not answer, Patch says so with an error (the caller
// reloads), and a reload makes Patch work again.
func TestCaddyPatchFails(t *testing.T) {
	r := newCaddyRig(t)
	b0, b1 := newCaddyBackend(t, "b0"), newCaddyBackend(t, "b1")
	v1 := r.write(t, r.config([]*caddyBackend{b0}, nil, ""))
	ctx := t.Context()
	if err := r.c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Someone loads another config through the admin API.
	other := r.config([]*caddyBackend{b0}, nil, "\trespond /other \"x\" 200\n")
	if err := os.WriteFile(r.conf+".other", other, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run(ctx, 5*time.Second, r.c.Bin, "reload", "--config", r.conf+".other", "--adapter", "caddyfile", "--address", r.admin); err != nil {
		t.Fatalf("caddy reload: %v: %s", err, out)
	}
	v2 := r.write(t, r.config([]*caddyBackend{b1}, nil, ""))
	patched, err := r.c.Patch(ctx, v1, v2)
	if err == nil || patched || !strings.Contains(err.Error(), "reports a config other than the files") {
		t.Fatalf("Patch with another config in Caddy = %v, %v; want an error", patched, err)
	}
	// The caller's reload makes Caddy equal the files again.
	if err := r.c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, servesHost("127.0.0.1:"+r.port, "b1", "web.localhost"))
	v3 := r.write(t, r.config([]*caddyBackend{b0}, nil, ""))
	if patched, err := r.c.Patch(ctx, v2, v3); err != nil || !patched {
		t.Fatalf("Patch after the reload = %v, %v; want true, nil", patched, err)
	}

	// Caddy gone: the admin API does not answer.
	if err := r.c.supervised.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if patched, err := r.c.Patch(ctx, v3, v2); err == nil || patched {
		t.Fatalf("Patch with Caddy stopped = %v, %v; want an error", patched, err)
	}
}

// TestCaddyRestartKeepsMembership: after a runtime change, a Caddy
// started afresh from the file, by a renderer that never saw the change
// (a new Caddy value, a new resolver), serves the same members, and so
// it does once no resolver answers at all.
func TestCaddyRestartKeepsMembership(t *testing.T) {
	r := newCaddyRig(t)
	b0, b1, b2 := newCaddyBackend(t, "b0"), newCaddyBackend(t, "b1"), newCaddyBackend(t, "b2")
	v1 := r.write(t, r.config([]*caddyBackend{b0, b1}, nil, ""))
	ctx := t.Context()
	if err := r.c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	v2 := r.write(t, r.config([]*caddyBackend{b2}, nil, ""))
	if patched, err := r.c.Patch(ctx, v1, v2); err != nil || !patched {
		t.Fatalf("Patch = %v, %v", patched, err)
	}
	testenv.Eventually(t, 5*time.Second, servesHost("127.0.0.1:"+r.port, "b2", "web.localhost"))
	if err := r.c.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	r.c = &Caddy{Bin: r.c.Bin, Config: r.c.Config, Admin: r.c.Admin, Timeout: r.c.Timeout, Supervise: true, Log: r.c.Log}
	if err := r.c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	k := dialKeep(t, "127.0.0.1:"+r.port)
	for range 30 {
		if body := k.mustGet(t, "web.localhost"); body != "b2" {
			t.Fatalf("after a restart, answer from %s; the file says b2 only", body)
		}
	}

	// Without the renderer (no resolver answers), Caddy uses the file's
	// static upstreams: the same members.
	r.c.rt.mu.Lock()
	r.c.rt.res.close()
	r.c.rt.mu.Unlock()
	before := b0.hits.Load() + b1.hits.Load()
	for range 30 {
		if body := k.mustGet(t, "web.localhost"); body != "b2" {
			t.Fatalf("with no resolver, answer from %s; the file says b2 only", body)
		}
	}
	if n := b0.hits.Load() + b1.hits.Load() - before; n != 0 {
		t.Errorf("members the file lacks got %d requests", n)
	}
}

// TestCaddyPatchImportedFile: the template renders a file the main
// Caddyfile imports; the diff adapts the running bytes of that file in
// place of the live one.
func TestCaddyPatchImportedFile(t *testing.T) {
	r := newCaddyRig(t)
	b0, b1 := newCaddyBackend(t, "b0"), newCaddyBackend(t, "b1")
	frag := filepath.Join(filepath.Dir(r.conf), "sites", "web.caddy")
	if err := os.MkdirAll(filepath.Dir(frag), 0o755); err != nil {
		t.Fatal(err)
	}
	site := func(b *caddyBackend) []byte {
		full := string(r.config([]*caddyBackend{b}, nil, ""))
		return []byte(full[strings.Index(full, "http://"):])
	}
	global := fmt.Sprintf("{\n\tadmin %s\n\tauto_https off\n}\nimport sites/*.caddy\n", r.admin)
	write(t, r.conf, global)
	v1 := map[string][]byte{frag: site(b0)}
	write(t, frag, string(v1[frag]))
	r.c.MainConfig = r.conf
	ctx := t.Context()
	if err := r.c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	v2 := map[string][]byte{frag: site(b1)}
	write(t, frag, string(v2[frag]))
	if patched, err := r.c.Patch(ctx, v1, v2); err != nil || !patched {
		t.Fatalf("Patch = %v, %v", patched, err)
	}
	testenv.Eventually(t, 5*time.Second, servesHost("127.0.0.1:"+r.port, "b1", "web.localhost"))
}

// TestCaddyResolverAnswers checks the DNS answers through Go's resolver,
// as Caddy asks them: the members of a pool (IPv4 and IPv6), NXDOMAIN for
// a name it does not serve, and no pool that does not fit a datagram.
func TestCaddyResolverAnswers(t *testing.T) {
	port, err := testenv.PickPort()
	if err != nil {
		t.Fatal(err)
	}
	res := newCaddyResolver(slog.New(slog.DiscardHandler))
	defer res.close()
	for _, network := range []string{"tcp", "udp"} {
		if err := res.listen(fmt.Sprintf("%s/127.0.0.1:%d", network, port)); err != nil {
			t.Fatal(err)
		}
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("[fd00::1]:8080"), netip.MustParseAddrPort("10.0.0.1:81")}
	// An IPv4-mapped member is served, and dialed, as its IPv4 address.
	rt := caddyRuntime{res: res}
	sp, why := rt.poolOf(&membership.CaddyPool{Name: "m.1.svc.switchyard.", Resolvers: []string{fmt.Sprintf("127.0.0.1:%d", port)},
		Servers: []membership.Server{{Addr: "[::ffff:10.0.0.2]:80"}}})
	if why != "" || sp.members[0] != netip.MustParseAddrPort("10.0.0.2:80") {
		t.Errorf("poolOf an IPv4-mapped member = %v, %q", sp.members, why)
	}
	res.set("web.1.svc.switchyard.", want)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for _, network := range []string{"tcp", "udp"} {
		addr := fmt.Sprintf("%s/127.0.0.1:%d", network, port)
		got, err := caddyLookup(ctx, addr, "WEB.1.svc.switchyard")
		if err != nil || !sameMembers(got, want) {
			t.Errorf("%s: lookup = %v, %v; want %v", network, got, err, want)
		}
		var dnsErr *net.DNSError
		if _, err := caddyLookup(ctx, addr, "api.1.svc.switchyard."); !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			t.Errorf("%s: unknown pool: %v, want not found", network, err)
		}
	}
	var many []netip.AddrPort
	for i := range 60 {
		many = append(many, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}), 80))
	}
	// SRV targets are never compressed: 44 bytes an IPv4 member.
	if !caddyFits("web.1.svc.switchyard.", many[:20], caddyMaxAnswer) || caddyFits("web.1.svc.switchyard.", many, caddyMaxAnswer) ||
		!caddyFits("web.1.svc.switchyard.", many, caddyMaxTCPAnswer) {
		t.Errorf("caddyFits: 20 IPv4 members must fit in a datagram, 60 must not; 60 fit over TCP")
	}
	for _, a := range []string{"8.8.8.8:53", "10.0.0.1:53", "[::1]:0", "unix//tmp/x"} {
		if _, ok := resolverAddr(a); ok {
			t.Errorf("resolverAddr(%s) accepted a non-loopback, portless or non-IP address", a)
		}
	}
	for in, want := range map[string]string{"udp/127.0.0.1": "udp/127.0.0.1:53", "127.0.0.2:8053": "tcp/127.0.0.2:8053", "[::1]:53": "tcp/[::1]:53"} {
		if a, ok := resolverAddr(in); !ok || a != want {
			t.Errorf("resolverAddr(%s) = %s, %v; want %s", in, a, ok, want)
		}
	}
}

// servesHost reports whether a new connection to addr for host answers
// want.
func servesHost(addr, want, host string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		k := &keepConn{c: c, br: bufio.NewReader(c)}
		got, err := k.get(host)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("answer from %s, want %s", got, want)
		}
		return nil
	}
}
