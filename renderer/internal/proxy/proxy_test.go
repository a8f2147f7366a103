package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

func get(addr string) (string, error) {
	cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := cl.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func serves(addr, want string) func() error {
	return func() error {
		got, err := get(addr)
		if err != nil {
			return err
		}
		if !strings.Contains(got, want) {
			return fmt.Errorf("got %q, want %q", got, want)
		}
		return nil
	}
}

// holdPort keeps a port busy so a reload that binds it fails after the
// config check passed: the case where nginx's exit status lies.
func holdPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

// confIn returns a fresh dir, the path of file in it and a free address
// for the proxy under test to listen on.
func confIn(t *testing.T, file string) (dir, conf, addr string) {
	t.Helper()
	dir = t.TempDir()
	return dir, filepath.Join(dir, file), fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func nginxConf(listen, body string, extra ...string) string {
	return fmt.Sprintf(`pid nginx.pid;
error_log error.log;
worker_processes 1;
events {}
http {
  client_body_temp_path cbt; proxy_temp_path pt; fastcgi_temp_path ft; uwsgi_temp_path ut; scgi_temp_path st;
  access_log off;
  server { listen %s; return 200 "%s\n"; }
  %s
}
`, listen, body, strings.Join(extra, "\n"))
}

// supervisedProxy is what the supervise-mode tests drive, for every proxy.
type supervisedProxy interface {
	Validate(ctx context.Context, path string) error
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	Reload(ctx context.Context) error
	Verify(ctx context.Context) error
}

// startServing validates conf, starts p as our child (stopped at cleanup)
// and waits until addr answers want.
func startServing(t *testing.T, p supervisedProxy, conf, addr, want string) {
	t.Helper()
	ctx := context.Background()
	if err := p.Validate(ctx, conf); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(ctx) })
	testenv.Eventually(t, 5*time.Second, serves(addr, want))
}

// reloadServes writes config to conf, reloads and verifies p, and waits
// until addr answers want.
func reloadServes(t *testing.T, p supervisedProxy, conf, config, addr, want string) {
	t.Helper()
	ctx := context.Background()
	write(t, conf, config)
	if err := p.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, serves(addr, want))
}

// reloadFails writes config to conf, a config that passes validation but
// cannot load (a port held by the test), and checks that Verify reports a
// ReloadError while addr still answers the old want. It returns the error.
func reloadFails(t *testing.T, p supervisedProxy, conf, config, addr, want string) *ReloadError {
	t.Helper()
	ctx := context.Background()
	write(t, conf, config)
	if err := p.Validate(ctx, conf); err != nil {
		t.Fatalf("the busy-port config should pass validation: %v", err)
	}
	if err := p.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	err := p.Verify(ctx)
	var re *ReloadError
	if !errors.As(err, &re) {
		t.Fatalf("Verify = %v, want a ReloadError", err)
	}
	testenv.Eventually(t, 5*time.Second, serves(addr, want))
	return re
}

func TestNginxSuperviseReloadVerify(t *testing.T) {
	bin := testenv.NginxBinary(t)
	prefix, conf, addr := confIn(t, "nginx.conf")
	write(t, conf, nginxConf(addr, "A"))
	n := &Nginx{Bin: bin, Prefix: prefix, Config: conf, Supervise: true, Timeout: 5 * time.Second, Log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	startServing(t, n, conf, addr, "A")
	reloadServes(t, n, conf, nginxConf(addr, "B"), addr, "B")

	// Passes nginx -t, fails at reload: the port is taken.
	busy := holdPort(t)
	n.Timeout = time.Second
	re := reloadFails(t, n, conf, nginxConf(addr, "C", "server { listen "+busy+"; return 200 \"busy\"; }"), addr, "B")
	if !strings.Contains(re.Output, "bind") {
		t.Errorf("error log lines missing the bind failure: %q", re.Output)
	}

	if err := n.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := get(addr); err == nil {
		t.Error("nginx still answers after Stop")
	}
}

func TestNginxValidateError(t *testing.T) {
	bin := testenv.NginxBinary(t)
	prefix := t.TempDir()
	conf := filepath.Join(prefix, "bad.conf")
	write(t, conf, "events {}\nhttp { bogus_directive on; }\n")
	n := &Nginx{Bin: bin, Prefix: prefix, Config: conf}
	err := n.Validate(context.Background(), conf)
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Proxy != "nginx" || ve.Path != conf || !strings.Contains(ve.Output, "bogus_directive") {
		t.Fatalf("Validate = %#v", err)
	}
}

func TestNginxExternalNotRunning(t *testing.T) {
	prefix := t.TempDir()
	conf := filepath.Join(prefix, "nginx.conf")
	write(t, conf, nginxConf("127.0.0.1:1", "x"))
	n := &Nginx{Bin: "nginx", Prefix: prefix, Config: conf}
	err := n.Reload(context.Background())
	var nr interface{ NotRunning() bool }
	if !errors.As(err, &nr) {
		t.Fatalf("Reload without nginx = %v, want a not-running error", err)
	}
}

func haproxyConf(listen, body string, extra ...string) string {
	return fmt.Sprintf(`global
    hard-stop-after 5s
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend fe
    bind %s
    http-request return status 200 content-type text/plain string "%s"
%s
`, listen, body, strings.Join(extra, "\n"))
}

func TestHAProxySuperviseReloadVerify(t *testing.T) {
	bin := testenv.HAProxyBinary(t)
	_, conf, addr := confIn(t, "haproxy.cfg")
	write(t, conf, haproxyConf(addr, "A"))
	h := &HAProxy{Bin: bin, Config: conf, Supervise: true, Timeout: 5 * time.Second, Log: slog.New(slog.DiscardHandler)}
	startServing(t, h, conf, addr, "A")
	reloadServes(t, h, conf, haproxyConf(addr, "B"), addr, "B")

	busy := holdPort(t)
	h.Timeout = 2 * time.Second
	reloadFails(t, h, conf, haproxyConf(addr, "C", "frontend busy\n    bind "+busy+"\n    http-request return status 200"), addr, "B")
}

func TestParseShowProc(t *testing.T) {
	out := "#<PID>          <type>          <reloads>       <uptime>        <version>      \n" +
		"6592            master          2 [failed: 1]   0d00h00m05s     2.6.12\n" +
		"# workers\n7205            worker          0               0d00h00m01s     2.6.12\n" +
		"# old workers\n7112            worker          1               0d00h00m03s     2.6.12\n# programs\n\n"
	p := parseShowProc(out)
	if p.failed != 1 || len(p.workers) != 1 || !p.workers[7205] {
		t.Errorf("parsed %+v", p)
	}
}

func TestCommandValidator(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "it's.conf")
	write(t, path, "ok")
	c := Command{Line: "grep -q ok {{path}}"}
	if err := c.Validate(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	write(t, path, "nope")
	var ve *ValidationError
	if err := c.Validate(context.Background(), path); !errors.As(err, &ve) {
		t.Fatalf("want ValidationError, got %v", err)
	}
}

// TestCommandTimeoutKillsTheGroup: a validator that hangs is a shell
// with a child; at the timeout both go, and the verdict comes at the
// timeout, not after the child would have ended.
func TestCommandTimeoutKillsTheGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "sleep.pid")
	c := Command{Line: "sleep 30 & echo $! > " + pidFile + "; wait", Timeout: 500 * time.Millisecond}
	start := time.Now()
	err := c.Validate(context.Background(), filepath.Join(dir, "x.conf"))
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("Validate = %v, want a timeout", err)
	}
	if took > 1400*time.Millisecond {
		t.Errorf("verdict after %s, want about the 500ms timeout", took)
	}
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid == 0 {
		t.Fatal("no pid recorded")
	}
	testenv.Eventually(t, 2*time.Second, func() error {
		if alive(pid) {
			return fmt.Errorf("the validator's child %d outlived the timeout", pid)
		}
		return nil
	})
}

func TestCaddySuperviseReload(t *testing.T) {
	bin := testenv.CaddyBinary(t)
	dir, conf, addr := confIn(t, "Caddyfile")
	t.Setenv("HOME", dir) // caddy keeps state under $HOME/.local/share
	t.Setenv("XDG_DATA_HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", dir)
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cf := func(body string) string {
		return fmt.Sprintf("{\n\tadmin %s\n\tauto_https off\n}\nhttp://%s {\n\trespond %q\n}\n", admin, addr, body)
	}
	write(t, conf, cf("A"))
	c := &Caddy{Bin: bin, Config: conf, Admin: admin, Supervise: true, Timeout: 10 * time.Second, Log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	startServing(t, c, conf, addr, "A")
	reloadServes(t, c, conf, cf("B"), addr, "B")

	write(t, conf, "{\n\tadmin "+admin+"\n}\nhttp://"+addr+" {\n\tno_such_directive\n}\n")
	var ve *ValidationError
	if err := c.Validate(ctx, conf); !errors.As(err, &ve) {
		t.Fatalf("Validate = %v, want ValidationError", err)
	}
}
