package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// haproxyBase is the static part of an HAProxy configuration split over
// several -f files: the global section and a named defaults section with
// the HTTP mode and the timeouts. The master CLI socket is the renderer's
// (-S); hard-stop-after bounds the soft stop at cleanup.
const haproxyBase = `global
  maxconn 256
  hard-stop-after 2s

defaults http-base
  mode http
  timeout connect 2s
  timeout client 10s
  timeout server 10s
`

// haproxySite renders the frontend and backend of the site. Both take
// their settings from the base file's named defaults: alone, the fragment
// fails haproxy -c ("defaults section 'http-base' not found"), so it is
// valid only inside the whole -f list. One KV line lets the test turn the
// render bad.
func haproxySite(listen string) string {
	return `frontend fe from http-base
  bind ` + listen + `
  default_backend be

backend be from http-base
  balance roundrobin
  {{ keyOrDefault "site/extra" "" }}
{{- range service "web" }}
  server {{ .ID }} {{ .Address }}:{{ .Port }}
{{- end }}
`
}

// fresh sends one request on a new connection: after a reload an idle
// keep-alive connection would still reach the old generation.
func fresh(listen, host string, code int, body string) func() error {
	return func() error {
		req, _ := http.NewRequest("GET", "http://"+listen+"/", nil)
		req.Host = host
		cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := cl.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != code || !strings.Contains(string(b), body) {
			return fmt.Errorf("GET %s via %s: %d %q, want %d %q", host, listen, resp.StatusCode, b, code, body)
		}
		return nil
	}
}

// supervisedUp waits until the supervised proxy has started on the first
// render and has nothing left to load, and returns the status then.
func supervisedUp(t *testing.T, status string) statusDoc {
	t.Helper()
	var st statusDoc
	testenv.Eventually(t, 15*time.Second, func() error {
		st = getStatus(t, status)
		if len(st.Proxies) != 1 || !st.Proxies[0].Up || st.Proxies[0].ReloadPending {
			return fmt.Errorf("supervised proxy not up yet: %+v", st.Proxies)
		}
		return nil
	})
	return st
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func putKV(t *testing.T, c *api.Client, k, v string) {
	t.Helper()
	if _, err := c.KV().Put(&api.KVPair{Key: k, Value: []byte(v)}, nil); err != nil {
		t.Fatal(err)
	}
}

// scaleOut registers a second instance of web and waits until requests
// reach it, and until the proxy has reloaded (more than before) or taken
// the change at runtime.
func scaleOut(t *testing.T, consul *testenv.Consul, status, listen, host string, reloads int64) {
	t.Helper()
	_, p2 := backend(t, "from web-2")
	register(t, consul.Client, "web", "web-2", p2)
	testenv.Eventually(t, 10*time.Second, fresh(listen, host, 200, "from web-2"))
	testenv.Eventually(t, 10*time.Second, func() error {
		st := getStatus(t, status)
		// A new instance is a change of membership only: a proxy that can
		// takes it at runtime (issue 9), the others reload.
		if p := st.Proxies[0]; (p.Reloads <= reloads && p.RuntimeApplies == 0) || p.ReloadPending || p.ReloadFailures != 0 {
			return fmt.Errorf("the change did not reach the proxy (reloads were %d): %+v", reloads, p)
		}
		if tm := st.Templates[0]; tm.Swaps < 2 || tm.Rejected != 0 {
			return fmt.Errorf("the change did not go live: %+v", tm)
		}
		return nil
	})
	testenv.Eventually(t, 5*time.Second, fresh(listen, host, 200, "from web"))
}

// rejectBad puts a bad line into the fragment through KV and checks that
// the render is rejected by validation naming the live fragment, that
// the live tree under root stays byte for byte the same, and that the
// proxy still serves.
func rejectBad(t *testing.T, consul *testenv.Consul, status, root, frag, bad, listen, host string) {
	t.Helper()
	before := treeSum(t, root)
	putKV(t, consul.Client, "site/extra", bad)
	word := strings.Fields(bad)[0]
	atLine := regexp.MustCompile(regexp.QuoteMeta(frag) + `:[0-9]+`)
	testenv.Eventually(t, 10*time.Second, func() error {
		tm := getStatus(t, status).Templates[0]
		if tm.Rejected == 0 {
			return fmt.Errorf("not rejected yet: %+v", tm)
		}
		// The proxy's own message, not only our "SRC -> DEST" prefix,
		// names the live fragment with a line (never a staged copy).
		if tm.LastErrorKind != "validation" || !atLine.MatchString(tm.LastError) ||
			!strings.Contains(tm.LastError, word) || strings.Contains(tm.LastError, ".staged-") {
			return fmt.Errorf("rejection (kind %q) does not name the live fragment %s at a line and %q: %q",
				tm.LastErrorKind, frag, word, tm.LastError)
		}
		return nil
	})
	if after := treeSum(t, root); after != before {
		t.Error("the live tree changed after a rejected render")
	}
	if b, _ := os.ReadFile(frag); strings.Contains(string(b), word) {
		t.Errorf("the rejected line is live:\n%s", b)
	}
	testenv.Eventually(t, 5*time.Second, fresh(listen, host, 200, "from web"))
	if p := getStatus(t, status).Proxies[0]; !p.Up || p.Deaths != 0 || p.ReloadFailures != 0 {
		t.Errorf("proxy after the rejected render: %+v", p)
	}
}

// TestHAProxyFilesAreOneConfig: issue 13 for HAProxy. The configuration is
// two -f files: a static base (global, named defaults) and a template's
// frontend and backend. The fragment alone fails haproxy -c; validated with
// every --haproxy-file in order it goes live, HAProxy supervised with the
// same list serves it, a change reloads it, and a bad render is rejected
// naming site.cfg, the live files unchanged.
func TestHAProxyFilesAreOneConfig(t *testing.T) {
	haproxy := testenv.HAProxyBinary(t)
	consul := testenv.StartConsul(t)
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	root := t.TempDir()
	base, site := filepath.Join(root, "base.cfg"), filepath.Join(root, "site.cfg")
	writeFile(t, base, haproxyBase)
	tmpl := filepath.Join(t.TempDir(), "site.ctmpl")
	writeFile(t, tmpl, haproxySite(listen))
	_, port := backend(t, "from web-1")
	register(t, consul.Client, "web", "web-1", port)

	status := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	sock := filepath.Join(t.TempDir(), "master.sock")
	daemon(t, "--consul-addr", consul.Addr, "--proxy-mode", "supervise", "--proxy", "haproxy",
		"--haproxy-bin", haproxy, "--haproxy-socket", sock,
		"--haproxy-file", base, "--haproxy-file", site, "--template", tmpl+":"+site+":haproxy",
		"--wait", "10ms:100ms", "--min-reload-gap", "0s", "--status-addr", status)
	testenv.Eventually(t, 15*time.Second, fresh(listen, "x", 200, "from web-1"))
	st := supervisedUp(t, status)
	if tm := st.Templates[0]; tm.Rejected != 0 || tm.Swaps != 1 || !tm.Accepted {
		t.Fatalf("first render: %+v", tm)
	}
	// The premise: the fragment is no configuration of its own.
	if out, err := exec.Command(haproxy, "-c", "-f", site).CombinedOutput(); err == nil {
		t.Fatalf("site.cfg alone passes haproxy -c; the test proves nothing:\n%s", out)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("--haproxy-socket: %v", err)
	}

	scaleOut(t, consul, status, listen, "x", st.Proxies[0].Reloads)
	rejectBad(t, consul, status, root, site, "no_such_keyword on", listen, "x")
}

// TestHAProxyDirectoryFile: --haproxy-file names a conf.d directory with a
// static 00-base.cfg; a template renders 50-site.cfg into it. HAProxy loads
// the directory's *.cfg in order, and so does the validation.
func TestHAProxyDirectoryFile(t *testing.T) {
	haproxy := testenv.HAProxyBinary(t)
	consul := testenv.StartConsul(t)
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	confD := filepath.Join(t.TempDir(), "conf.d")
	writeFile(t, filepath.Join(confD, "00-base.cfg"), haproxyBase)
	tmpl := filepath.Join(t.TempDir(), "site.ctmpl")
	writeFile(t, tmpl, haproxySite(listen))
	_, port := backend(t, "from web-1")
	register(t, consul.Client, "web", "web-1", port)

	status := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	site := filepath.Join(confD, "50-site.cfg")
	daemon(t, "--consul-addr", consul.Addr, "--proxy-mode", "supervise", "--proxy", "haproxy",
		"--haproxy-bin", haproxy, "--haproxy-file", confD, "--template", tmpl+":"+site,
		"--wait", "10ms:100ms", "--min-reload-gap", "0s", "--status-addr", status)
	testenv.Eventually(t, 15*time.Second, fresh(listen, "x", 200, "from web-1"))
	st := supervisedUp(t, status)
	if tm := st.Templates[0]; tm.Rejected != 0 || tm.Swaps != 1 || !tm.Accepted {
		t.Fatalf("first render: %+v", tm)
	}
	if out, err := exec.Command(haproxy, "-c", "-f", site).CombinedOutput(); err == nil {
		t.Fatalf("50-site.cfg alone passes haproxy -c; the test proves nothing:\n%s", out)
	}

	scaleOut(t, consul, status, listen, "x", st.Proxies[0].Reloads)
}

// TestCaddyImport: a main Caddyfile (global options, import sites/*.caddy)
// the test writes, and a template rendering sites/app.caddy. The import is
// validated inside the main Caddyfile, Caddy supervised with the main
// Caddyfile serves it, a change is applied through the admin API, and a
// bad fragment is rejected naming it, the live tree unchanged.
func TestCaddyImport(t *testing.T) {
	caddy := testenv.CaddyBinary(t)
	consul := testenv.StartConsul(t)
	// Caddy keeps its state (autosave, certificates) under these.
	t.Setenv("HOME", t.TempDir())
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	root := t.TempDir()
	mainConf := filepath.Join(root, "Caddyfile")
	writeFile(t, mainConf, `{
	admin `+admin+`
	auto_https off
	grace_period 1s
}

import sites/*.caddy
`)
	tmpl := filepath.Join(t.TempDir(), "app.ctmpl")
	writeFile(t, tmpl, `http://`+listen+` {
	bind 127.0.0.1
	{{ keyOrDefault "site/extra" "" }}
	reverse_proxy {{ range service "web" }}{{ .Address }}:{{ .Port }} {{ end }}
}
`)
	_, port := backend(t, "from web-1")
	register(t, consul.Client, "web", "web-1", port)

	status := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	app := filepath.Join(root, "sites", "app.caddy")
	daemon(t, "--consul-addr", consul.Addr, "--proxy-mode", "supervise", "--proxy", "caddy",
		"--caddy-bin", caddy, "--caddy-conf", mainConf, "--caddy-admin", admin, "--template", tmpl+":"+app,
		"--wait", "10ms:100ms", "--min-reload-gap", "0s", "--status-addr", status)
	host := "127.0.0.1"
	testenv.Eventually(t, 15*time.Second, fresh(listen, host, 200, "from web-1"))
	st := supervisedUp(t, status)
	if tm := st.Templates[0]; tm.Rejected != 0 || tm.Swaps != 1 || !tm.Accepted {
		t.Fatalf("first render: %+v", tm)
	}

	scaleOut(t, consul, status, listen, host, st.Proxies[0].Reloads)
	rejectBad(t, consul, status, root, app, "no_such_directive on", listen, host)
}
