package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// httpGet fetches a status endpoint on 127.0.0.1.
func httpGet(url string) (int, string, error) {
	cl := &http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestDaemonStatusServer: --status-addr serves readiness, the state of
// each template (a rejection with nginx's own words) and metrics, against
// a real Consul and a real nginx.
func TestDaemonStatusServer(t *testing.T) {
	nginx := testenv.NginxBinary(t)
	consul := testenv.StartConsul(t)
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	base := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))

	// No render before the test puts the keys, so /ready is 503 until then.
	dir, tmpl := kvSiteTemplate(t, listen)
	put := func(k, v string) {
		t.Helper()
		if _, err := consul.Client.KV().Put(&api.KVPair{Key: k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	dest := filepath.Join(dir, "prefix", "nginx.conf")
	daemon(t, "--consul-addr", consul.Addr, "--template", tmpl+":"+dest,
		"--proxy-mode", "supervise", "--nginx-bin", nginx, "--wait", "10ms:100ms", "--min-reload-gap", "0s",
		"--status-addr", strings.TrimPrefix(base, "http://"))

	testenv.Eventually(t, 10*time.Second, func() error {
		code, b, err := httpGet(base + "/healthz")
		if err != nil || code != 200 || b != "ok\n" {
			return fmt.Errorf("/healthz: %d %q %v", code, b, err)
		}
		return nil
	})
	if code, b, err := httpGet(base + "/ready"); err != nil || code != 503 || !strings.Contains(b, "no render accepted yet") {
		t.Fatalf("/ready before any render: %d %q %v", code, b, err)
	}

	put("site/greeting", "hello")
	put("site/extra", "")
	testenv.Eventually(t, 15*time.Second, func() error {
		if code, b, err := httpGet(base + "/ready"); err != nil || code != 200 {
			return fmt.Errorf("/ready: %d %q %v", code, b, err)
		}
		return nil
	})
	testenv.Eventually(t, 10*time.Second, expect(listen, "x", 200, "hello"))

	put("site/extra", "no_such_directive on;")
	var doc statusDoc
	testenv.Eventually(t, 10*time.Second, func() error {
		code, b, err := httpGet(base + "/status")
		if err != nil || code != 200 {
			return fmt.Errorf("/status: %d %v", code, err)
		}
		if err := json.Unmarshal([]byte(b), &doc); err != nil {
			return fmt.Errorf("/status: %v\n%s", err, b)
		}
		if len(doc.Templates) != 1 || doc.Templates[0].Rejected < 1 {
			return fmt.Errorf("no rejection in /status yet:\n%s", b)
		}
		return nil
	})
	tp := doc.Templates[0]
	if tp.Source != tmpl || tp.Dest != dest || tp.Proxy != "nginx:"+dest || !tp.Accepted || tp.Swaps != 1 {
		t.Errorf("template status: %+v", tp)
	}
	// nginx's own explanation, not just "exit status 1".
	if !strings.Contains(tp.LastError, `unknown directive "no_such_directive"`) {
		t.Errorf("last_error lacks nginx's output: %q", tp.LastError)
	}
	if len(doc.Proxies) != 1 || doc.Proxies[0].Name != "nginx:"+dest {
		t.Errorf("proxies: %+v", doc.Proxies)
	}
	// The last good config keeps serving: still ready.
	if !doc.Ready {
		t.Errorf("not ready after a rejection of a later render")
	}
	if code, _, _ := httpGet(base + "/ready"); code != 200 {
		t.Errorf("/ready after a rejection: %d", code)
	}

	_, metrics, err := httpGet(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	labels := fmt.Sprintf(`{dest=%q,template=%q}`, dest, tmpl)
	for _, want := range []string{
		"switchyard_renderer_renders_rejected_total" + labels + " 1\n",
		"switchyard_renderer_swaps_total" + labels + " 1\n",
		"switchyard_renderer_template_error" + labels + " 1\n",
		"switchyard_renderer_stale_guard_held" + labels + " 0\n",
		fmt.Sprintf("switchyard_renderer_reload_failures_total{proxy=%q} 0\n", "nginx:"+dest),
		"switchyard_renderer_ready 1\n",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, metrics)
		}
	}
	testenv.Eventually(t, 5*time.Second, expect(listen, "x", 200, "hello"))
}

// TestStatusAddrInUse: a status address that cannot be bound fails the
// start with exit 1 and a message naming the flag and the value.
func TestStatusAddrInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "a.tmpl")
	if err := os.WriteFile(tmpl, []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_, errs, code := runCmd(t, "--consul-addr", "127.0.0.1:1", "--template", tmpl+":"+filepath.Join(dir, "a.out")+":none",
		"--status-addr", addr)
	if code != exitUsage || !strings.Contains(errs, fmt.Sprintf("--status-addr %q", addr)) {
		t.Errorf("exit %d, want %d naming the flag:\n%s", code, exitUsage, errs)
	}
}
