package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// showProc26 is what HAProxy 2.6 answers to "show proc".
const showProc26 = "#<PID>          <type>          <reloads>       <uptime>        <version>      \n" +
	"4242            master          0 [failed: 0]   0d00h00m05s     2.6.12\n" +
	"# workers\n4243            worker          0               0d00h00m05s     2.6.12\n" +
	"# programs\n\n"

// fakeMaster is an HAProxy master CLI on a unix socket. misbehave says,
// for the n-th connection (from 0), whether to close it without an answer
// ("close"), to hold it without an answer until the client gives up
// ("hang"), or to answer like HAProxy 2.6 ("").
type fakeMaster struct {
	misbehave func(n int) string
	mu        sync.Mutex
	seen      []string // "command:what we did"
	n         int
	stop      chan struct{} // closed at cleanup: ends a "hang"
}

func startFakeMaster(t *testing.T, path string, misbehave func(n int) string) *fakeMaster {
	t.Helper()
	f := &fakeMaster{misbehave: misbehave, stop: make(chan struct{})}
	f.serve(t, unixListen(t, path))
	return f
}

func (f *fakeMaster) serve(t *testing.T, l *net.UnixListener) {
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); close(f.stop); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); f.handle(conn) }()
		}
	}()
}

func (f *fakeMaster) handle(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	f.mu.Lock()
	n := f.n
	f.n++
	f.mu.Unlock()
	line, _ := bufio.NewReader(conn).ReadString('\n')
	cmd := strings.TrimSpace(line)
	what := f.misbehave(n)
	switch {
	case what != "":
	case cmd == "show proc":
		what = "answered"
	default:
		what = "ok"
	}
	f.mu.Lock()
	f.seen = append(f.seen, cmd+":"+what)
	f.mu.Unlock()
	switch what {
	case "hang":
		<-f.stop // a master too busy to answer
	case "answered":
		_, _ = io.WriteString(conn, showProc26)
	}
}

func (f *fakeMaster) log() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.seen, ", ")
}

func firstConn(what string) func(int) string {
	return func(n int) string {
		if n == 0 {
			return what
		}
		return ""
	}
}

func sockIn(t *testing.T) string {
	// t.TempDir paths can exceed the 108 bytes a unix socket path may have.
	dir, err := os.MkdirTemp("", "sy-sock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "master.sock")
}

func isNotRunning(err error) bool {
	var nr interface{ NotRunning() bool }
	return errors.As(err, &nr) && nr.NotRunning()
}

// A master CLI that fails once (closes the connection unanswered, or does
// not answer in time) is asked again: Reload succeeds, and the workers it
// remembers for Verify come from a real answer.
func TestHAProxyReloadRetriesTransientCLI(t *testing.T) {
	for _, what := range []string{"close", "hang"} {
		t.Run(what, func(t *testing.T) {
			sock := sockIn(t)
			f := startFakeMaster(t, sock, firstConn(what))
			h := &HAProxy{Socket: sock, Timeout: 3 * time.Second, Log: slog.New(slog.DiscardHandler)}
			if err := h.Reload(context.Background()); err != nil {
				t.Fatalf("Reload = %v (master saw %s)", err, f.log())
			}
			want := "show proc:" + what + ", show proc:answered, reload:ok"
			if got := f.log(); got != want {
				t.Errorf("master saw %q, want %q", got, want)
			}
			if !h.before[4243] || len(h.before) != 1 {
				t.Errorf("workers before the reload = %v, want [4243]", h.before)
			}
		})
	}
}

// A master socket that refuses for a moment (HAProxy refuses while it
// re-executes) and then answers: Reload waits for it.
func TestHAProxyReloadWaitsForRefusingSocket(t *testing.T) {
	sock := sockIn(t)
	l := unixListen(t, sock)
	l.SetUnlinkOnClose(false)
	l.Close() // the file stays: connections are refused
	back := make(chan *fakeMaster)
	go func() {
		time.Sleep(300 * time.Millisecond)
		os.Remove(sock)
		f := &fakeMaster{misbehave: firstConn(""), stop: make(chan struct{})}
		f.serve(t, unixListen(t, sock))
		back <- f
	}()
	h := &HAProxy{Socket: sock, Timeout: 3 * time.Second, Log: slog.New(slog.DiscardHandler)}
	err := h.Reload(context.Background())
	f := <-back
	if err != nil {
		t.Fatalf("Reload = %v", err)
	}
	if got, want := f.log(), "show proc:answered, reload:ok"; got != want {
		t.Errorf("master saw %q, want %q", got, want)
	}
}

// No socket at all, or a socket nobody listens on for the whole deadline:
// there is no master, and the error says so.
func TestHAProxyReloadNotRunning(t *testing.T) {
	sock := sockIn(t)
	h := &HAProxy{Socket: sock, Timeout: time.Second, Log: slog.New(slog.DiscardHandler)}
	start := time.Now()
	if err := h.Reload(context.Background()); !isNotRunning(err) {
		t.Fatalf("Reload without a socket = %v, want a not-running error", err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("a missing socket took %s to report", took)
	}
	l := unixListen(t, sock)
	l.SetUnlinkOnClose(false)
	l.Close()
	if err := h.Reload(context.Background()); !isNotRunning(err) {
		t.Fatalf("Reload on a stale socket = %v, want a not-running error", err)
	}
	// A supervised HAProxy that was never started is not running either.
	s := &HAProxy{Socket: sock, Supervise: true, Log: slog.New(slog.DiscardHandler)}
	if err := s.Reload(context.Background()); !isNotRunning(err) {
		t.Fatalf("Reload before Start = %v, want a not-running error", err)
	}
}

// A master that is there but never answers is not "not running": the
// caller must keep its pending reload.
func TestHAProxyReloadBusyMasterIsPlainError(t *testing.T) {
	sock := sockIn(t)
	f := startFakeMaster(t, sock, func(int) string { return "hang" })
	h := &HAProxy{Socket: sock, Timeout: time.Second, Log: slog.New(slog.DiscardHandler)}
	start := time.Now()
	err := h.Reload(context.Background())
	if err == nil || isNotRunning(err) {
		t.Fatalf("Reload against a silent master = %v, want a plain error", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Reload took %s with a 1s timeout", took)
	}
	if !strings.Contains(f.log(), "show proc:hang, show proc:hang") {
		t.Errorf("master saw %q, want retries", f.log())
	}
}

// Real HAProxy: a Reload right after another one meets the master while
// it re-executes (its CLI refuses for a few hundred ms). It must wait, not
// report "not running"; Verify then sees the second generation. Both the
// supervised handle and an external one on the same socket.
func TestHAProxyReloadDuringReexec(t *testing.T) {
	bin := testenv.HAProxyBinary(t)
	_, conf, addr := confIn(t, "haproxy.cfg")
	write(t, conf, haproxyConf(addr, "A"))
	h := &HAProxy{Bin: bin, Config: conf, Supervise: true, Timeout: 5 * time.Second, Log: slog.New(slog.DiscardHandler)}
	startServing(t, h, conf, addr, "A")
	ext := &HAProxy{Bin: bin, Config: conf, Timeout: 5 * time.Second, Log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	for i, p := range []*HAProxy{h, ext} {
		body := fmt.Sprintf("gen%d", i)
		write(t, conf, haproxyConf(addr, body))
		if err := p.Reload(ctx); err != nil {
			t.Fatalf("first Reload: %v", err)
		}
		if err := p.Reload(ctx); err != nil {
			t.Fatalf("Reload while the master re-executes: %v", err)
		}
		if err := p.Verify(ctx); err != nil {
			t.Fatalf("Verify: %v", err)
		}
		testenv.Eventually(t, 5*time.Second, serves(addr, body))
	}
}

// fakeAdmin is a Caddy admin API that answers GET /config/ with the
// status codes in order (then 200), and POST /load with 200.
func fakeAdmin(t *testing.T, codes ...int) (addr string, loads func() int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/load":
			n++
		case len(codes) > 0:
			code := codes[0]
			codes = codes[1:]
			http.Error(w, "busy", code)
		default:
			_, _ = io.WriteString(w, "null\n") // running, without a config yet
		}
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return n }
}

func caddyEnv(t *testing.T) (dir, conf string) {
	t.Helper()
	dir = t.TempDir()
	t.Setenv("HOME", dir) // caddy keeps state under $HOME/.local/share
	t.Setenv("XDG_DATA_HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", dir)
	conf = filepath.Join(dir, "Caddyfile")
	write(t, conf, fmt.Sprintf("{\n\tauto_https off\n}\nhttp://127.0.0.1:%d {\n\trespond \"A\"\n}\n", testenv.FreePort(t)))
	return dir, conf
}

// An admin API that answers 503 for a moment is asked again; Reload then
// loads the config.
func TestCaddyReloadRetriesTransientAdmin(t *testing.T) {
	bin := testenv.CaddyBinary(t)
	_, conf := caddyEnv(t)
	admin, loads := fakeAdmin(t, http.StatusServiceUnavailable, http.StatusBadGateway)
	c := &Caddy{Bin: bin, Config: conf, Admin: admin, Timeout: 5 * time.Second, Log: slog.New(slog.DiscardHandler)}
	if err := c.Reload(context.Background()); err != nil {
		t.Fatalf("Reload = %v", err)
	}
	if loads() != 1 {
		t.Errorf("admin API saw %d loads, want 1", loads())
	}
}

// A 5xx that lasts is a plain error; no admin API at all is "not running".
func TestCaddyReloadErrors(t *testing.T) {
	bin := testenv.CaddyBinary(t)
	_, conf := caddyEnv(t)
	codes := make([]int, 1000)
	for i := range codes {
		codes[i] = http.StatusServiceUnavailable
	}
	admin, loads := fakeAdmin(t, codes...)
	c := &Caddy{Bin: bin, Config: conf, Admin: admin, Timeout: time.Second, Log: slog.New(slog.DiscardHandler)}
	if err := c.Reload(context.Background()); err == nil || isNotRunning(err) {
		t.Fatalf("Reload against a failing admin API = %v, want a plain error", err)
	}
	if loads() != 0 {
		t.Errorf("loaded through a failing admin API")
	}
	c.Admin = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	if err := c.Reload(context.Background()); !isNotRunning(err) {
		t.Fatalf("Reload without an admin API = %v, want a not-running error", err)
	}
	s := &Caddy{Bin: bin, Config: conf, Admin: admin, Supervise: true, Log: slog.New(slog.DiscardHandler)}
	if err := s.Reload(context.Background()); !isNotRunning(err) {
		t.Fatalf("Reload before Start = %v, want a not-running error", err)
	}
}

// Reload's Timeout bounds the whole reload: the admin API check and the
// caddy reload command share it, rather than getting one each.
func TestCaddyReloadWithinTimeout(t *testing.T) {
	bin := testenv.CaddyBinary(t)
	_, conf := caddyEnv(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			// A /load that never finishes. The body must be read for the
			// server to notice the client going away.
			_, _ = io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
			return
		}
		time.Sleep(600 * time.Millisecond) // a slow, but answering, admin API
		_, _ = io.WriteString(w, "{}\n")
	}))
	t.Cleanup(srv.Close)
	c := &Caddy{Bin: bin, Config: conf, Admin: srv.Listener.Addr().String(), Timeout: 2 * time.Second, Log: slog.New(slog.DiscardHandler)}
	start := time.Now()
	err := c.Reload(context.Background())
	took := time.Since(start)
	var re *ReloadError
	if !errors.As(err, &re) || isNotRunning(err) {
		t.Fatalf("Reload = %v, want a ReloadError", err)
	}
	if took > 2300*time.Millisecond {
		t.Errorf("Reload took %s with a 2s timeout", took)
	}
}

// Verify's Timeout bounds the whole wait, including a "show proc" that
// hangs when the time is nearly up.
func TestHAProxyVerifyWithinTimeout(t *testing.T) {
	sock := sockIn(t)
	start := time.Now()
	startFakeMaster(t, sock, func(int) string {
		if time.Since(start) < 800*time.Millisecond {
			return "close" // re-executing: no answer yet
		}
		return "hang"
	})
	h := &HAProxy{Socket: sock, Timeout: time.Second, Log: slog.New(slog.DiscardHandler)}
	err := h.Verify(context.Background())
	took := time.Since(start)
	var re *ReloadError
	if !errors.As(err, &re) {
		t.Fatalf("Verify = %v, want a ReloadError", err)
	}
	if took > 1300*time.Millisecond {
		t.Errorf("Verify took %s with a 1s timeout", took)
	}
}
