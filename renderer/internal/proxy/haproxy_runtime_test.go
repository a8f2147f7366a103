package proxy

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/membership"
	"github.com/switchyard/switchyard/scripts/testenv"
)

// instance is a backend server on loopback that answers its own name.
type instance struct {
	name, addr string // addr as a server line writes it: 127.0.0.1:PORT or [::1]:PORT
}

func startInstance(t *testing.T, name, network string, h http.Handler) instance {
	t.Helper()
	host := "127.0.0.1:0"
	if network == "tcp6" {
		host = "[::1]:0"
	}
	l, err := net.Listen(network, host)
	if err != nil {
		t.Fatal(err)
	}
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) })
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: h}}
	srv.Start()
	t.Cleanup(srv.Close)
	return instance{name: name, addr: l.Addr().String()}
}

func instances(t *testing.T, names ...string) []instance {
	var out []instance
	for _, n := range names {
		out = append(out, startInstance(t, n, "tcp4", nil))
	}
	return out
}

// serverLine is the shipped template's server line: named by address.
func serverLine(in instance, extra ...string) string {
	name := strings.NewReplacer("[", "", "]:", "_").Replace(in.addr)
	return strings.Join(append([]string{"    server", name, in.addr, "check inter 2s fall 1 rise 1"}, extra...), " ") + "\n"
}

func runtimeConf(listen string, servers ...string) string {
	return fmt.Sprintf(`global
    hard-stop-after 5s
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend fe
    bind %s
    default_backend svc_web
backend svc_web
    balance roundrobin
%s`, listen, strings.Join(servers, ""))
}

// startHAProxy runs HAProxy in master-worker mode as our child on conf.
func startHAProxy(t *testing.T, conf, config string, files ...string) *HAProxy {
	t.Helper()
	write(t, conf, config)
	h := &HAProxy{Bin: testenv.HAProxyBinary(t), Config: conf, Files: files, Supervise: true,
		Timeout: 5 * time.Second, Log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Stop(ctx) })
	return h
}

// patch writes next to conf, as the pipeline does before it asks, and
// patches the running HAProxy from prev to next.
func patch(t *testing.T, h *HAProxy, conf, prev, next string) (bool, error) {
	t.Helper()
	write(t, conf, next)
	patched, err := h.Patch(context.Background(), map[string][]byte{conf: []byte(prev)}, map[string][]byte{conf: []byte(next)})
	agreesWithPatch(t, h.RuntimeOnly, prev, next, patched, err)
	return patched, err
}

// hits sends n requests, each on a new connection, and counts the answers.
func hits(t *testing.T, addr string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		body, err := get(addr)
		if err != nil {
			t.Fatalf("request through haproxy: %v", err)
		}
		got[body]++
	}
	return got
}

// servesExactly waits until requests reach every one of want and nothing
// else (roundrobin: 4 rounds reach every server).
func servesExactly(t *testing.T, addr string, want ...string) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() error {
		got := hits(t, addr, 4*len(want))
		if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(slices.Values(want))) {
			return fmt.Errorf("answers %v, want exactly %v", got, want)
		}
		return nil
	})
}

func worker(t *testing.T, h *HAProxy) proc {
	t.Helper()
	p, err := h.showProc(context.Background())
	if err != nil || len(p.workers) != 1 {
		t.Fatalf("show proc: %v %q", err, p.raw)
	}
	return p
}

func sameWorker(t *testing.T, h *HAProxy, before proc) {
	t.Helper()
	if after := worker(t, h); !maps.Equal(after.workers, before.workers) || strings.Contains(after.raw, "old workers\n1") {
		t.Fatalf("a new worker generation: before %v, after %v\n%s", before.workers, after.workers, after.raw)
	}
}

// TestHAProxyPatchMembership: adds, removals, an address change, a
// weight and a disabled flag reach the running worker through the master
// CLI: real requests reach exactly the configured instances, and the
// worker is the one that served before (no reload).
func TestHAProxyPatchMembership(t *testing.T) {
	_, conf, listen := confIn(t, "haproxy.cfg")
	in := instances(t, "a", "b", "c", "d")
	v6 := startInstance(t, "v6", "tcp6", nil)
	cfg := runtimeConf(listen, serverLine(in[0]), serverLine(in[1]))
	h := startHAProxy(t, conf, cfg)
	servesExactly(t, listen, "a", "b")
	w := worker(t, h)

	steps := []struct {
		name  string
		lines []string
		want  []string
	}{
		{"add c and an IPv6 instance", []string{serverLine(in[0]), serverLine(in[1]), serverLine(in[2]), serverLine(v6)}, []string{"a", "b", "c", "v6"}},
		{"remove a (first) and v6", []string{serverLine(in[1]), serverLine(in[2])}, []string{"b", "c"}},
		{"address of a named server", []string{serverLine(in[1]), "    server moving " + in[2].addr + "\n"}, []string{"b", "c"}},
		{"it moves to d", []string{serverLine(in[1]), "    server moving " + in[3].addr + "\n"}, []string{"b", "d"}},
		{"weight", []string{serverLine(in[1], "weight 3"), "    server moving " + in[3].addr + "\n"}, []string{"b", "d"}},
		{"disabled", []string{serverLine(in[1], "weight 3"), "    server moving " + in[3].addr + " disabled\n"}, []string{"b"}},
		{"enabled again", []string{serverLine(in[1]), "    server moving " + in[3].addr + "\n"}, []string{"b", "d"}},
	}
	for _, s := range steps {
		next := runtimeConf(listen, s.lines...)
		patched, err := patch(t, h, conf, cfg, next)
		if err != nil || !patched {
			t.Fatalf("%s: Patch = %t, %v", s.name, patched, err)
		}
		cfg = next
		// Patch returns once the worker has the new members: no waiting.
		got := hits(t, listen, 8*len(s.want))
		if !slices.Equal(slices.Sorted(maps.Keys(got)), s.want) {
			t.Fatalf("%s: answers %v, want exactly %v", s.name, got, s.want)
		}
		if s.name == "weight" && got["b"] != 3*got["d"] {
			t.Errorf("weights 3:1: answers %v", got)
		}
	}
	sameWorker(t, h, w)
}

// TestHAProxyPatchStructural: a change the runtime API cannot make is
// left to a reload, untouched; comments alone need nothing.
func TestHAProxyPatchStructural(t *testing.T) {
	_, conf, listen := confIn(t, "haproxy.cfg")
	in := instances(t, "a", "b")
	cfg := runtimeConf(listen, serverLine(in[0]))
	h := startHAProxy(t, conf, cfg)
	servesExactly(t, listen, "a")
	w := worker(t, h)

	for name, next := range map[string]string{
		"new backend":       cfg + "backend svc_api\n" + serverLine(in[1]),
		"server options":    runtimeConf(listen, strings.Replace(serverLine(in[0]), "inter 2s", "inter 3s", 1)),
		"balance algorithm": strings.Replace(runtimeConf(listen, serverLine(in[0]), serverLine(in[1])), "roundrobin", "static-rr", 1),
	} {
		if patched, err := patch(t, h, conf, cfg, next); patched || err != nil {
			t.Errorf("%s: Patch = %t, %v; want false, nil", name, patched, err)
		}
		write(t, conf, cfg)
	}
	if patched, err := h.Patch(context.Background(), map[string][]byte{}, map[string][]byte{conf: []byte(cfg)}); patched || err != nil {
		t.Errorf("a file not known as it runs: Patch = %t, %v; want false, nil", patched, err)
	}
	if patched, err := patch(t, h, conf, cfg, cfg+"# skipped \"x\": a comment\n"); !patched || err != nil {
		t.Errorf("comments only: Patch = %t, %v; want true, nil", patched, err)
	}
	servesExactly(t, listen, "a")
	sameWorker(t, h, w)
}

// TestHAProxyPatchRefusedByHAProxy: the backend takes "balance source"
// from a defaults section in another file, which the diff of the
// rendered file does not see; HAProxy refuses "add server", and Patch
// says so. A reload then makes the worker equal to the file.
func TestHAProxyPatchRefusedByHAProxy(t *testing.T) {
	dir, conf, listen := confIn(t, "haproxy.cfg")
	defaults := filepath.Join(dir, "00-defaults.cfg")
	write(t, defaults, "defaults\n    mode http\n    balance source\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\n")
	in := instances(t, "a", "b")
	body := func(servers ...string) string {
		return "frontend fe\n    bind " + listen + "\n    default_backend svc_web\nbackend svc_web\n" + strings.Join(servers, "")
	}
	cfg := body(serverLine(in[0]))
	h := startHAProxy(t, conf, cfg, defaults, conf)
	servesExactly(t, listen, "a")

	next := body(serverLine(in[0]), serverLine(in[1]))
	patched, err := patch(t, h, conf, cfg, next)
	if patched || err == nil || !strings.Contains(err.Error(), "dynamic load balancing") {
		t.Fatalf("Patch = %t, %v; want HAProxy's refusal", patched, err)
	}
	reloadTakes(t, h)
	// balance source sends all of 127.0.0.1 to one server: ask the worker.
	if got, want := members(t, h, "svc_web"), slices.Sorted(slices.Values([]string{serverName(in[0]), serverName(in[1])})); !slices.Equal(got, want) {
		t.Errorf("after the reload the worker has %v", got)
	}
}

func serverName(in instance) string { return strings.Fields(serverLine(in))[1] }

// members lists the servers the current worker has in backend be.
func members(t *testing.T, h *HAProxy, be string) []string {
	t.Helper()
	rt, err := h.runtime(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st, err := rt.state(context.Background(), be)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(st))
}

// TestHAProxyPatchTwoFiles: a backend in a rendered file that takes its
// settings from named defaults in a static file of the -f list is patched
// like any other; the static file is not part of the change.
func TestHAProxyPatchTwoFiles(t *testing.T) {
	dir, conf, listen := confIn(t, "site.cfg")
	base := filepath.Join(dir, "base.cfg")
	write(t, base, "defaults http-base\n    mode http\n    balance roundrobin\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\n")
	in := instances(t, "a", "b")
	body := func(servers ...string) string {
		return "frontend fe from http-base\n    bind " + listen + "\n    default_backend be\nbackend be from http-base\n" + strings.Join(servers, "")
	}
	cfg := body(serverLine(in[0]))
	h := startHAProxy(t, conf, cfg, base, conf)
	servesExactly(t, listen, "a")
	w := worker(t, h)
	if patched, err := patch(t, h, conf, cfg, body(serverLine(in[0]), serverLine(in[1]))); !patched || err != nil {
		t.Fatalf("Patch = %t, %v", patched, err)
	}
	servesExactly(t, listen, "a", "b")
	sameWorker(t, h, w)
}

func reloadTakes(t *testing.T, h *HAProxy) {
	t.Helper()
	if err := h.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := h.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestHAProxyPatchWorkerDrifted: the worker does not have what the
// running config says (a server deleted by hand): Patch fails rather
// than guess, and the reload that follows restores the file's members.
func TestHAProxyPatchWorkerDrifted(t *testing.T) {
	_, conf, listen := confIn(t, "haproxy.cfg")
	in := instances(t, "a", "b", "c")
	cfg := runtimeConf(listen, serverLine(in[0]), serverLine(in[1]))
	h := startHAProxy(t, conf, cfg)
	servesExactly(t, listen, "a", "b")
	name := serverName(in[1])
	if out, err := h.cli(context.Background(), "@1 set server svc_web/"+name+" state maint"); err != nil {
		t.Fatalf("set server state maint: %v %q", err, out)
	}
	// HAProxy refuses to delete a server that still has a connection
	// (the requests above may leave one open for reuse): ask until it
	// says the server is gone, or the test would see the maint state
	// instead of the missing server.
	testenv.Eventually(t, 5*time.Second, func() error {
		out, err := h.cli(context.Background(), "@1 del server svc_web/"+name)
		if err != nil || !strings.Contains(out, "Server deleted") {
			return fmt.Errorf("del server: %v %q", err, out)
		}
		return nil
	})
	next := runtimeConf(listen, serverLine(in[0]), serverLine(in[1]), serverLine(in[2]))
	patched, err := patch(t, h, conf, cfg, next)
	if patched || err == nil || !strings.Contains(err.Error(), "the worker has no server "+name) {
		t.Fatalf("Patch = %t, %v; want the drift named", patched, err)
	}
	reloadTakes(t, h)
	servesExactly(t, listen, "a", "b", "c")
}

// drainRig is HAProxy with one backend of one server, slow, holding one
// request; a is the server a patch puts in its place.
type drainRig struct {
	h                 *HAProxy
	conf, cfg, listen string
	slow              instance
	in                []instance // a
	release           func()     // lets slow answer
	inflight          <-chan string
}

func startDrainRig(t *testing.T, timeout time.Duration) drainRig {
	t.Helper()
	_, conf, listen := confIn(t, "haproxy.cfg")
	slow, release, arrived := holdingInstance(t)
	d := drainRig{conf: conf, listen: listen, slow: slow, in: instances(t, "a"), release: release}
	d.cfg = runtimeConf(listen, serverLine(slow))
	d.h = startHAProxy(t, conf, d.cfg)
	d.h.Timeout = timeout
	d.inflight = requestHeld(t, listen, arrived)
	return d
}

// holdingInstance starts an instance named slow whose answers wait for
// release; arrived receives once per request that reached it.
func holdingInstance(t *testing.T) (slow instance, release func(), arrived <-chan struct{}) {
	t.Helper()
	held, reached := make(chan struct{}), make(chan struct{}, 1)
	slow = startInstance(t, "slow", "tcp4", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		reached <- struct{}{}
		<-held
		io.WriteString(w, "slow")
	}))
	// Released at cleanup too, which runs before the server's Close: a
	// handler still blocked would hold Close, and the test, forever.
	release = sync.OnceFunc(func() { close(held) })
	t.Cleanup(release)
	return slow, release, reached
}

// requestHeld sends one request through listen and returns once the
// holding instance has it; the channel gives its outcome, "slow<nil>"
// when it ended whole.
func requestHeld(t *testing.T, listen string, arrived <-chan struct{}) <-chan string {
	t.Helper()
	inflight := make(chan string, 1)
	go func() {
		cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := cl.Get("http://" + listen + "/")
		if err != nil {
			inflight <- err.Error()
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		inflight <- fmt.Sprint(string(body), err)
	}()
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the slow instance")
	}
	return inflight
}

// TestHAProxyPatchDrainBound: a removed server with a request in flight
// is out of rotation at once, but cannot be deleted before the request
// ends; past the bound Patch fails (the reload that follows lets the old
// worker finish it). The request in flight is not cut.
func TestHAProxyPatchDrainBound(t *testing.T) {
	d := startDrainRig(t, 2*time.Second) // the drain gets half of it
	h, conf, cfg, listen, in, releaseOnce, inflight := d.h, d.conf, d.cfg, d.listen, d.in, d.release, d.inflight

	start := time.Now()
	patched, err := patch(t, h, conf, cfg, runtimeConf(listen, serverLine(in[0])))
	if patched || err == nil || !strings.Contains(err.Error(), "not drained") {
		t.Fatalf("Patch = %t, %v; want a drain timeout", patched, err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("Patch took %s with a 2s timeout", took)
	}
	// Already out of rotation: new requests go to a.
	if got := hits(t, listen, 4); got["a"] != 4 {
		t.Errorf("answers %v while slow drains, want a only", got)
	}
	releaseOnce()
	if got := <-inflight; got != "slow<nil>" {
		t.Errorf("the request in flight ended with %q", got)
	}
}

// TestHAProxyPatchDrainsARequestInFlight: a server removed while it
// serves a request is deleted once that request ends, within the bound.
// HAProxy 2.6 hands the request's server connection to the idle pool when
// it ends, although the server is in maintenance, and keeps it there
// (half the pool is purged every 5 s, never the last connection); "del
// server" refuses a server with any connection. So the drain must close
// those idle connections itself, or every removal under load would fall
// back to a reload.
func TestHAProxyPatchDrainsARequestInFlight(t *testing.T) {
	d := startDrainRig(t, 8*time.Second) // the drain gets half of it
	h, conf, cfg, listen, in, slow := d.h, d.conf, d.cfg, d.listen, d.in, d.slow

	type result struct {
		patched bool
		err     error
	}
	done := make(chan result, 1)
	go func() {
		patched, err := h.Patch(context.Background(), map[string][]byte{conf: []byte(cfg)}, map[string][]byte{conf: []byte(runtimeConf(listen, serverLine(in[0])))})
		done <- result{patched, err}
	}()
	write(t, conf, runtimeConf(listen, serverLine(in[0])))
	// The request ends once slow is in maintenance, well inside the
	// drain's bound.
	slowName := strings.TrimSpace(strings.Fields(serverLine(slow))[1])
	testenv.Eventually(t, 3*time.Second, func() error {
		out, err := h.cli(context.Background(), "@1 show servers state svc_web")
		if err != nil {
			return err
		}
		rows, err := hxTable(out, "# be_id ", "srv_name", "srv_admin_state")
		if err != nil {
			return err
		}
		for _, r := range rows {
			if admin, _ := strconv.Atoi(r["srv_admin_state"]); r["srv_name"] == slowName && admin&admForcedMaint != 0 {
				return nil
			}
		}
		return fmt.Errorf("%s not in maintenance yet: %s", slowName, out)
	})
	d.release()
	if got := <-d.inflight; got != "slow<nil>" {
		t.Errorf("the request in flight ended with %q", got)
	}
	r := <-done
	if !r.patched || r.err != nil {
		t.Fatalf("Patch = %t, %v; want the server deleted once its request ended", r.patched, r.err)
	}
	if out, err := h.cli(context.Background(), "@1 show servers conn svc_web"); err != nil || !strings.Contains(out, "# bkname/svname") || strings.Contains(out, slow.addr) {
		t.Errorf("the worker still has the removed server (%v): %s", err, out)
	}
}

func TestHAProxyTable(t *testing.T) {
	out := "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n" +
		"2 svc_web 1 127.0.0.1:19001 127.0.0.1 2 0 1 1 7 6 3 1 6 0 0 0 - 19001 - 0 0 - - 0\n" +
		"2 svc_web 2 fd00::1_80 fd00::1 0 5 3 3 2 1 0 0 8 0 0 0 - 80 - 0 0 - - 0\n\n"
	rows, err := hxTable(out, "# be_id ", "srv_name", "srv_port")
	if err != nil || len(rows) != 2 || rows[1]["srv_name"] != "fd00::1_80" || rows[1]["srv_admin_state"] != "5" {
		t.Fatalf("rows %v, %v", rows, err)
	}
	for _, bad := range []string{"Can't find backend.\n", "", "Unknown command\n"} {
		if _, err := hxTable(bad, "# be_id ", "srv_name"); err == nil {
			t.Errorf("%q read as a table", bad)
		}
	}
	if _, err := hxTable(out, "# be_id ", "no_such_column"); err == nil {
		t.Error("a missing column was not reported")
	}
}

func TestPlanPool(t *testing.T) {
	p := poolOf(
		[]string{"keep 10.0.0.1:80 1 up", "gone 10.0.0.2:80 1 up", "heavier 10.0.0.3:80 1 up", "moves 10.0.0.4:80 1 up", "off 10.0.0.5:80 1 up", "on 10.0.0.6:80 1 down"},
		[]string{"keep 10.0.0.1:80 1 up", "new 10.0.0.7:80 1 up", "heavier 10.0.0.3:80 4 up", "moves 10.0.0.8:80 1 up", "off 10.0.0.5:80 1 down", "on 10.0.0.6:80 1 up"},
	)
	pl := planPool(p)
	names := func(ss []string) string { return strings.Join(ss, ",") }
	got := map[string]string{
		"add": names(serverNames(pl.add)), "weight": names(serverNames(pl.weight)), "down": names(serverNames(pl.down)),
		"remove": names(pl.remove), "readd": names(serverNames(pl.readd)), "readdr": names(serverNames(pl.readdr)),
	}
	want := map[string]string{"add": "new", "weight": "heavier", "down": "off", "remove": "gone", "readd": "on", "readdr": "moves"}
	if !maps.Equal(got, want) {
		t.Errorf("plan %v, want %v", got, want)
	}
}

// poolOf builds a pool from "name addr weight up|down" lines.
func poolOf(old, servers []string) membership.Pool {
	parse := func(lines []string) []membership.Server {
		var out []membership.Server
		for _, l := range lines {
			f := strings.Fields(l)
			w, _ := strconv.Atoi(f[2])
			out = append(out, membership.Server{Name: f[0], Addr: f[1], Weight: w, Down: f[3] == "down"})
		}
		return out
	}
	return membership.Pool{Name: "b", Old: parse(old), Servers: parse(servers)}
}

func serverNames(ss []membership.Server) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return out
}

func TestHAProxyPatchErrorsNameTheBackend(t *testing.T) {
	h := &HAProxy{Config: filepath.Join(t.TempDir(), "haproxy.cfg"), Socket: filepath.Join(t.TempDir(), "none.sock"),
		Timeout: 300 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}
	old := runtimeConf("127.0.0.1:1", "    server a 10.0.0.1:80\n")
	next := runtimeConf("127.0.0.1:1", "    server a 10.0.0.1:80\n    server b 10.0.0.2:80\n")
	_, err := h.Patch(context.Background(), map[string][]byte{h.Config: []byte(old)}, map[string][]byte{h.Config: []byte(next)})
	if err == nil || errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "haproxy runtime apply") {
		t.Fatalf("Patch without a master = %v", err)
	}
}

var (
	patchLoadChanges = flag.Int("haproxy-patch-changes", 20, "membership changes TestHAProxyPatchUnderKeepAliveLoad makes per mode, 250ms apart")
	patchCompare     = flag.Bool("haproxy-patch-compare", false, "TestHAProxyPatchUnderKeepAliveLoad also applies the changes by reloads, for comparison (a reload under this load takes 1-2 s here)")
)

// TestHAProxyPatchUnderKeepAliveLoad is issue 9's measure without the
// renderer: 32 keep-alive connections send requests through HAProxy while
// an instance is added or removed every 250ms, each change applied by
// Patch (no request may fail, one worker throughout) or, with
// -haproxy-patch-compare, by a reload (failures logged for comparison).
func TestHAProxyPatchUnderKeepAliveLoad(t *testing.T) {
	modes := []string{"patch"}
	if *patchCompare {
		modes = append(modes, "reload")
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			_, conf, listen := confIn(t, "haproxy.cfg")
			in := instances(t, "a", "b", "c", "d")
			cfg := runtimeConf(listen, serverLine(in[0]), serverLine(in[1]))
			h := startHAProxy(t, conf, cfg)
			servesExactly(t, listen, "a", "b")
			w := worker(t, h)
			workers := maps.Clone(w.workers)
			load := testenv.StartKeepAliveLoad(listen, "x", 32)
			t.Cleanup(func() { load.Stop() }) // a failed change must not leave the clients running
			var took time.Duration
			tick := time.NewTicker(250 * time.Millisecond)
			for i := range *patchLoadChanges {
				<-tick.C
				lines := []string{serverLine(in[0]), serverLine(in[1])}
				if i%2 == 0 {
					lines = append(lines, serverLine(in[2+(i/2)%2]))
				}
				next := runtimeConf(listen, lines...)
				start := time.Now()
				if mode == "patch" {
					if ok, err := patch(t, h, conf, cfg, next); !ok || err != nil {
						t.Fatalf("change %d: Patch = %t, %v", i, ok, err)
					}
				} else {
					write(t, conf, next)
					reloadTakes(t, h)
				}
				took += time.Since(start)
				cfg = next
				maps.Copy(workers, worker(t, h).workers)
			}
			tick.Stop()
			res := load.Stop()
			n, failed, reasons := res.Requests, res.Failed, res.Reasons
			t.Logf("%s: %d changes (%s each on average), %d requests, %d failed %v, %d workers",
				mode, *patchLoadChanges, (took / time.Duration(max(1, *patchLoadChanges))).Round(time.Microsecond), n, failed, reasons, len(workers))
			if mode == "patch" {
				if failed != 0 {
					t.Errorf("%d requests failed while patching", failed)
				}
				sameWorker(t, h, w)
			}
		})
	}
}
