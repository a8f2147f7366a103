package main

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// ctNginxExample is consul-template's documented nginx example
// (examples/nginx.md in hashicorp/consul-template): a fragment with an
// upstream and a server, meant for conf.d/. Two changes for a test: the
// listen address comes from the environment (no port 80 here), and one KV
// line lets the test turn the render bad.
const ctNginxExample = `upstream backend {
{{- range service "web" }}
  server {{ .Address }}:{{ .Port }};
{{- end }}
}

server {
  listen {{ env "SWITCHYARD_LISTEN" }};
  {{ keyOrDefault "site/extra" "" }}
  location / {
    proxy_pass http://backend;
  }
}
`

// debianTree writes a distribution-style nginx tree under a temp dir:
// etc/nginx/nginx.conf with absolute includes of mime.types and
// conf.d/*.conf, as Debian's, and its pid file under run/.
func debianTree(t *testing.T) (root, mainConf, confD string) {
	t.Helper()
	root = t.TempDir()
	etc := filepath.Join(root, "etc", "nginx")
	confD = filepath.Join(etc, "conf.d")
	for _, d := range []string{confD, filepath.Join(root, "run"), filepath.Join(root, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mainConf = filepath.Join(etc, "nginx.conf")
	tmp := filepath.Join(root, "tmp")
	conf := fmt.Sprintf(`pid %s/run/nginx.pid;
error_log stderr;
events {}
http {
  include %s/mime.types;
  client_body_temp_path %s/cb; proxy_temp_path %s/pt; fastcgi_temp_path %s/ft; uwsgi_temp_path %s/ut; scgi_temp_path %s/st;
  access_log off;
  include %s/*.conf;
}
`, root, etc, tmp, tmp, tmp, tmp, tmp, confD)
	for name, body := range map[string]string{"nginx.conf": conf, "mime.types": "types { text/html html; }\n"} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root, mainConf, confD
}

// startDistNginx runs nginx on mainConf the way a distribution does: a
// daemon of its own (not our child), found through its pid file.
func startDistNginx(t *testing.T, bin, root, mainConf string) {
	t.Helper()
	// Its output goes to a file: the daemon keeps the descriptors, and a
	// pipe would keep Run waiting for it.
	logf, err := os.Create(filepath.Join(root, "nginx.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "-e", "stderr", "-c", mainConf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(logf.Name())
		t.Fatalf("start nginx: %v: %s", err, out)
	}
	t.Cleanup(func() {
		b, _ := os.ReadFile(filepath.Join(root, "run", "nginx.pid"))
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	})
}

// treeSum hashes every file of the live tree (names and contents, not
// our hidden staging and generations), to show it did not change.
func treeSum(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".") ||
			strings.Contains(p, ".generations") || d.Name() == "nginx.log" {
			return err
		}
		b, _ := os.ReadFile(p)
		fmt.Fprintf(h, "%s\x00%x\x00", p, sha256.Sum256(b))
		return nil
	})
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestFragmentValidatedInItsMainConfig: issue 13. consul-template's own
// nginx example renders a fragment into conf.d/ of a distribution-style
// tree whose nginx runs on its own. Validated alone, every render was
// rejected ("upstream" directive is not allowed here); validated inside
// the main config it goes live and serves, nginx reloaded through its pid
// file. A bad render is rejected naming the real fragment path, and the
// live tree stays byte for byte the same.
func TestFragmentValidatedInItsMainConfig(t *testing.T) {
	nginx := testenv.NginxBinary(t)
	consul := testenv.StartConsul(t)
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	t.Setenv("SWITCHYARD_LISTEN", listen)
	root, mainConf, confD := debianTree(t)
	startDistNginx(t, nginx, root, mainConf)
	tmpl := filepath.Join(t.TempDir(), "nginx.conf.ctmpl")
	if err := os.WriteFile(tmpl, []byte(ctNginxExample), 0o644); err != nil {
		t.Fatal(err)
	}
	_, port := backend(t, "from web")
	register(t, consul.Client, "web", "web-1", port)

	status := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	frag := filepath.Join(confD, "default.conf")
	daemon(t, "--consul-addr", consul.Addr, "--template", tmpl+":"+frag+":nginx", "--nginx-conf", mainConf,
		"--nginx-bin", nginx, "--wait", "10ms:100ms", "--min-reload-gap", "0s", "--status-addr", status)
	testenv.Eventually(t, 15*time.Second, expect(listen, "x", 200, "from web"))
	if st := reloadSettled(t, status); st.Templates[0].Rejected != 0 {
		t.Fatalf("after the first render: %+v", st)
	}

	before := treeSum(t, root)
	if _, err := consul.Client.KV().Put(&api.KVPair{Key: "site/extra", Value: []byte("no_such_directive on;")}, nil); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		tm := getStatus(t, status).Templates[0]
		if tm.Rejected == 0 {
			return fmt.Errorf("not rejected yet: %+v", tm)
		}
		if tm.LastErrorKind != "validation" || !strings.Contains(tm.LastError, frag) ||
			!strings.Contains(tm.LastError, "no_such_directive") {
			return fmt.Errorf("rejection does not name the live fragment and the directive: %q", tm.LastError)
		}
		return nil
	})
	if after := treeSum(t, root); after != before {
		t.Error("the live tree changed after a rejected render")
	}
	testenv.Eventually(t, 5*time.Second, expect(listen, "x", 200, "from web"))
}

// TestFragmentsOfOneNginxAreOneUnit: issue 13. Two templates render two
// fragments of one nginx: one defines the upstream, the other proxies to
// it by name. Renaming the upstream is valid only with both files; each
// alone fails nginx -t ("host not found in upstream"). The unit is
// validated together, swapped together and reloaded once; a bad member
// holds back the other one too. The stale guard is off here: a renamed
// upstream is, to it, an upstream that lost every server (held by design,
// tested elsewhere).
func TestFragmentsOfOneNginxAreOneUnit(t *testing.T) {
	nginx := testenv.NginxBinary(t)
	consul := testenv.StartConsul(t)
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	root, mainConf, confD := debianTree(t)
	startDistNginx(t, nginx, root, mainConf)
	dir := t.TempDir()
	upT, srvT := filepath.Join(dir, "up.ctmpl"), filepath.Join(dir, "srv.ctmpl")
	for path, body := range map[string]string{
		upT: `# {{ keyOrDefault "site/extra" "" }}
upstream {{ key "site/up" }} {
{{- range service "web" }}
  server {{ .Address }}:{{ .Port }};
{{- end }}
}
`,
		srvT: `server {
  listen ` + listen + `;
  {{ keyOrDefault "site/extra" "" }}
  location / { proxy_pass http://{{ key "site/up" }}; }
}
`} {
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kv := consul.Client.KV()
	put := func(k, v string) {
		t.Helper()
		if _, err := kv.Put(&api.KVPair{Key: k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	put("site/up", "backend")
	_, port := backend(t, "from web")
	register(t, consul.Client, "web", "web-1", port)

	status := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	up, srv := filepath.Join(confD, "10-upstream.conf"), filepath.Join(confD, "20-server.conf")
	daemon(t, "--consul-addr", consul.Addr, "--nginx-conf", mainConf, "--nginx-bin", nginx,
		"--template", upT+":"+up+":nginx", "--template", srvT+":"+srv+":nginx",
		"--wait", "10ms:100ms", "--min-reload-gap", "0s", "--status-addr", status, "--max-removal", "0")
	testenv.Eventually(t, 15*time.Second, expect(listen, "x", 200, "from web"))
	st := reloadSettled(t, status)
	if st.Templates[0].Rejected+st.Templates[1].Rejected != 0 {
		t.Errorf("a member was validated before the other existed: %+v", st.Templates)
	}
	if len(st.Proxies) != 1 {
		t.Fatalf("two fragments of one nginx make %d proxies", len(st.Proxies))
	}
	reloads := st.Proxies[0].Reloads

	put("site/up", "renamed")
	testenv.Eventually(t, 10*time.Second, func() error {
		st := getStatus(t, status)
		if st.Templates[0].Swaps != 2 || st.Templates[1].Swaps != 2 || st.Proxies[0].Reloads <= reloads {
			return fmt.Errorf("rename not live in both yet: %+v %+v", st.Templates, st.Proxies)
		}
		return nil
	})
	if b, _ := os.ReadFile(up); !strings.Contains(string(b), "upstream renamed") {
		t.Fatalf("upstream fragment:\n%s", b)
	}
	testenv.Eventually(t, 5*time.Second, expect(listen, "x", 200, "from web"))
	if st := getStatus(t, status); st.Proxies[0].Reloads != reloads+1 || st.Proxies[0].ReloadFailures != 0 {
		t.Errorf("the unit's change took %d reloads (%d failed), want 1", st.Proxies[0].Reloads-reloads, st.Proxies[0].ReloadFailures)
	}

	// The server member turns bad in the change that changes the upstream
	// member too (both read site/extra: one key, one watch, so one pass;
	// two keys could reach the runner in two passes): the upstream
	// member, valid alone, stays too.
	before := treeSum(t, root)
	put("site/extra", "no_such_directive on;")
	testenv.Eventually(t, 10*time.Second, func() error {
		if tm := getStatus(t, status).Templates[1]; tm.Rejected == 0 || !strings.Contains(tm.LastError, "no_such_directive") {
			return fmt.Errorf("server member not rejected yet: %+v", tm)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // any stray swap would land now
	if after := treeSum(t, root); after != before {
		t.Error("a member of a rejected unit went live")
	}
	testenv.Eventually(t, 5*time.Second, expect(listen, "x", 200, "from web"))
}

// reloadSettled waits until the proxy's reload of the first render has
// been verified (nginx may serve the new config a moment before the
// renderer has proved it) and returns the status then.
func reloadSettled(t *testing.T, status string) statusDoc {
	t.Helper()
	var st statusDoc
	testenv.Eventually(t, 10*time.Second, func() error {
		st = getStatus(t, status)
		if len(st.Proxies) == 0 || st.Proxies[0].Reloads < 1 || st.Proxies[0].ReloadPending {
			return fmt.Errorf("first reload not verified yet: %+v", st.Proxies)
		}
		return nil
	})
	return st
}
