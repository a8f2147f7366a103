package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// ctNginxFragment is a rendered instance of consul-template's documented
// nginx example (examples/nginx.md, rendered to /etc/nginx/conf.d/default.conf):
// an upstream block per service and one server block, which only make
// sense inside the http block of the main config.
func ctNginxFragment(listen string) string {
	return `upstream web {
  zone upstream-web 64k;
  least_conn;
  server 127.0.0.1:9001 max_fails=3 fail_timeout=60 weight=1;
  server 127.0.0.1:9002 max_fails=3 fail_timeout=60 weight=1;
}

server {
  listen ` + listen + `;

  location / {
    root /usr/share/nginx/html/;
    index index.html;
  }

  location /stub_status {
    stub_status;
  }

  location /web {
    proxy_pass http://web;
  }
}
`
}

// debianTree is a Debian-style nginx tree in a temp dir: base/etc/nginx
// with nginx.conf, mime.types, proxy_params, conf.d/, sites-available/,
// sites-enabled/ (a symlink), modules-enabled/, and an absolute include of
// base/srv/nginx/shared.conf outside the conf dir. The pid file goes to
// base/run, as Debian's goes to /run; logs and temp paths go to a dir of
// their own, which nginx -t may write.
type debianTree struct {
	base, conf, main, varDir string
}

func newDebianTree(t *testing.T) debianTree {
	t.Helper()
	base := t.TempDir()
	d := debianTree{base: base, conf: filepath.Join(base, "etc/nginx"), varDir: t.TempDir()}
	d.main = filepath.Join(d.conf, "nginx.conf")
	for _, dir := range []string{"conf.d", "sites-available", "sites-enabled", "modules-enabled", "snippets"} {
		mkdir(t, filepath.Join(d.conf, dir))
	}
	mkdir(t, filepath.Join(base, "run"))
	mkdir(t, filepath.Join(base, "srv/nginx"))
	write(t, d.main, fmt.Sprintf(`worker_processes 1;
pid %[1]s/run/nginx.pid;
error_log %[2]s/error.log;
include %[1]s/etc/nginx/modules-enabled/*.conf;

events {
	worker_connections 64; # multi_accept on;
}

http {
	include mime.types;
	default_type application/octet-stream;
	access_log %[2]s/access.log;
	client_body_temp_path %[2]s/body; proxy_temp_path %[2]s/proxy;
	fastcgi_temp_path %[2]s/fastcgi; uwsgi_temp_path %[2]s/uwsgi; scgi_temp_path %[2]s/scgi;

	include "%[1]s/srv/nginx/shared.conf";
	include conf.d/*.conf;
	include sites-enabled/*;
}
`, base, d.varDir))
	write(t, filepath.Join(d.conf, "mime.types"), "types {\n\ttext/html html htm;\n\ttext/css css;\n}\n")
	write(t, filepath.Join(d.conf, "proxy_params"), "proxy_set_header Host $http_host;\nproxy_set_header X-Real-IP $remote_addr;\n")
	write(t, filepath.Join(d.conf, "modules-enabled/50-env.conf"), "env SWITCHYARD_SHADOW;\n")
	// Included from outside the conf dir; its own relative include still
	// resolves against the conf prefix.
	write(t, filepath.Join(base, "srv/nginx/shared.conf"), "map $http_upgrade $connection_upgrade {\n\tdefault upgrade;\n\t'' close;\n}\ninclude snippets/*.conf;\n")
	write(t, filepath.Join(d.conf, "snippets/gzip.conf"), "gzip on;\n")
	d.site(t, "site", "server {\n\tlisten 127.0.0.1:1;\n\tlocation / {\n\t\tinclude proxy_params;\n\t\tproxy_pass http://127.0.0.1:9;\n\t}\n}\n")
	// The last good render, live.
	write(t, d.path("conf.d/default.conf"), ctNginxFragment("80 default_server"))
	return d
}

func (d debianTree) path(rel string) string { return filepath.Join(d.conf, rel) }

// site writes sites-available/name and enables it with a relative
// symlink, as a2ensite-style tooling does.
func (d debianTree) site(t *testing.T, name, body string) {
	t.Helper()
	write(t, d.path("sites-available/"+name), body)
	if err := os.Symlink("../sites-available/"+name, d.path("sites-enabled/"+name)); err != nil {
		t.Fatal(err)
	}
}

func (d debianTree) nginx(t *testing.T) *Nginx {
	t.Helper()
	return &Nginx{Bin: testenv.NginxBinary(t), MainConfig: d.main, Config: d.path("conf.d/default.conf"),
		Prefix: d.varDir, Timeout: 5 * time.Second}
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

// stageNext writes content where the pipeline stages it: a new hidden
// file next to live. It is in the live tree, so hash the tree after it.
func stageNext(t *testing.T, live, content string) string {
	t.Helper()
	f, err := os.CreateTemp(filepath.Dir(live), "."+filepath.Base(live)+".staged-*")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	write(t, f.Name(), content)
	return f.Name()
}

// treeHash maps every path under root to a digest of what it is: a file's
// mode and bytes, a symlink's target, a dir.
func treeHash(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			out[p] = "link " + target
			return err
		case d.IsDir():
			out[p] = "dir " + info.Mode().String()
		default:
			b, err := os.ReadFile(p)
			sum := sha256.Sum256(b)
			out[p] = info.Mode().String() + " " + hex.EncodeToString(sum[:])
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameTree fails the test if root differs from before in any byte.
func sameTree(t *testing.T, root string, before map[string]string) {
	t.Helper()
	after := treeHash(t, root)
	for p, h := range before {
		if after[p] != h {
			t.Errorf("live tree changed: %s was %q, is %q", p, h, after[p])
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("live tree changed: %s appeared", p)
		}
	}
}

func validationError(t *testing.T, err error) *ValidationError {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v, want a ValidationError", err)
	}
	return ve
}

// The defect of issue 13, then its fix: consul-template's fragment fails
// nginx -t alone, and passes in the configuration nginx loads.
func TestNginxValidateSetFragmentInContext(t *testing.T) {
	d := newDebianTree(t)
	live := d.path("conf.d/default.conf")
	staged := stageNext(t, live, ctNginxFragment("80 default_server"))
	n := d.nginx(t)
	before := treeHash(t, d.base)

	ve := validationError(t, n.Validate(context.Background(), staged))
	if !strings.Contains(ve.Output, `"upstream" directive is not allowed here`) {
		t.Errorf("the fragment alone: %v", ve)
	}
	if err := n.ValidateSet(context.Background(), map[string]string{live: staged}); err != nil {
		t.Fatalf("the fragment in context: %v", err)
	}
	sameTree(t, d.base, before)
}

func TestNginxValidateSetSyntaxErrorNamesLiveFragment(t *testing.T) {
	d := newDebianTree(t)
	live := d.path("conf.d/default.conf")
	bad := strings.Replace(ctNginxFragment("80 default_server"), "proxy_pass http://web;", "proxy_pass http://web", 1)
	staged := stageNext(t, live, bad)
	before := treeHash(t, d.base)

	ve := validationError(t, d.nginx(t).ValidateSet(context.Background(), map[string]string{live: staged}))
	t.Log(ve)
	line := strings.Count(bad[:strings.Index(bad, "proxy_pass")], "\n") + 2 // the "}" after it
	if want := fmt.Sprintf("%s:%d", live, line); !strings.Contains(ve.Output, want) || ve.Path != live {
		t.Errorf("error should name %s, got Path %s, Output %q", want, ve.Path, ve.Output)
	}
	if strings.Contains(ve.Output, "switchyard-nginx-") || strings.Contains(ve.Output, staged) {
		t.Errorf("error names a shadow or staged path: %q", ve.Output)
	}
	sameTree(t, d.base, before)
}

// A fragment the glob will match once it exists is tested in context:
// accepted when it fits, rejected when it clashes with a live fragment.
func TestNginxValidateSetNewFragment(t *testing.T) {
	d := newDebianTree(t)
	live := d.path("conf.d/api.conf")
	staging := t.TempDir() // a staged file may live anywhere
	good := filepath.Join(staging, "good.conf")
	write(t, good, "upstream api {\n  server 127.0.0.1:9003;\n}\n")
	clash := filepath.Join(staging, "clash.conf")
	write(t, clash, "upstream web {\n  server 127.0.0.1:9003;\n}\n") // default.conf has "web"
	n := d.nginx(t)
	before := treeHash(t, d.base)

	if err := n.ValidateSet(context.Background(), map[string]string{live: good}); err != nil {
		t.Fatalf("new fragment: %v", err)
	}
	// conf.d/api.conf comes first in the glob's order, so nginx names the
	// live default.conf as the duplicate.
	ve := validationError(t, n.ValidateSet(context.Background(), map[string]string{live: clash}))
	if !strings.Contains(ve.Output, `duplicate upstream "web" in `+d.path("conf.d/default.conf")+":1") {
		t.Errorf("clash: %v", ve)
	}
	if _, err := os.Stat(live); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the new fragment was written to the live tree: %v", err)
	}
	sameTree(t, d.base, before)
}

// Two fragments validated as one set: each alone would clash with the
// other's live version, together they fit.
func TestNginxValidateSetTwoFragments(t *testing.T) {
	d := newDebianTree(t)
	a, b := d.path("conf.d/default.conf"), d.path("conf.d/other.conf")
	write(t, b, "upstream api {\n  server 127.0.0.1:9003;\n}\n")
	// Swap the upstream names between the two files.
	sa := stageNext(t, a, strings.ReplaceAll(ctNginxFragment("80 default_server"), "web", "api"))
	sb := stageNext(t, b, "upstream web {\n  server 127.0.0.1:9003;\n}\n")
	n := d.nginx(t)
	if err := n.ValidateSet(context.Background(), map[string]string{a: sa}); err == nil {
		t.Error("one member alone should clash with the other's live file")
	}
	if err := n.ValidateSet(context.Background(), map[string]string{a: sa, b: sb}); err != nil {
		t.Fatalf("the set: %v", err)
	}
}

func TestNginxValidateSetNotLoaded(t *testing.T) {
	d := newDebianTree(t)
	live := d.path("conf.d/notes.txt") // conf.d/*.conf does not match it
	staged := filepath.Join(t.TempDir(), "notes.txt")
	write(t, staged, "upstream x { server 127.0.0.1:1; }\n")
	ve := validationError(t, d.nginx(t).ValidateSet(context.Background(), map[string]string{live: staged}))
	if !errors.Is(ve, ErrNotLoaded) || ve.Path != live {
		t.Errorf("got %v, want ErrNotLoaded for %s", ve, live)
	}
}

// The pipeline stages next to a symlink's target and names the target;
// nginx reaches the file through sites-enabled/, the symlink.
func TestNginxValidateSetThroughSymlink(t *testing.T) {
	d := newDebianTree(t)
	target := d.path("sites-available/site")
	n := d.nginx(t)
	good := stageNext(t, target, "server {\n\tlisten 127.0.0.1:2;\n\tlocation / { include proxy_params; }\n}\n")
	if err := n.ValidateSet(context.Background(), map[string]string{target: good}); err != nil {
		t.Fatalf("site through sites-enabled: %v", err)
	}
	bad := stageNext(t, target, "server {\n\tlisten 127.0.0.1:2;\n\tbogus_directive on;\n}\n")
	ve := validationError(t, n.ValidateSet(context.Background(), map[string]string{target: bad}))
	if !strings.Contains(ve.Output, d.path("sites-enabled/site")+":3") || ve.Path != target {
		t.Errorf("got Path %s, Output %q", ve.Path, ve.Output)
	}
}

// A relative path that is not an include (ssl_certificate certs/x.pem)
// resolves against the conf prefix, which the shadow links to the live
// conf dir; nginx -t loads certificates, so a wrong link fails.
func TestNginxValidateSetRelativeCertificate(t *testing.T) {
	d := newDebianTree(t)
	mkdir(t, d.path("certs"))
	writeSelfSigned(t, d.path("certs/site.pem"), d.path("certs/site.key"))
	live := d.path("conf.d/tls.conf")
	staged := filepath.Join(t.TempDir(), "tls.conf")
	write(t, staged, "server {\n\tlisten 127.0.0.1:3 ssl;\n\tssl_certificate certs/site.pem;\n\tssl_certificate_key certs/site.key;\n}\n")
	before := treeHash(t, d.base)
	if err := d.nginx(t).ValidateSet(context.Background(), map[string]string{live: staged}); err != nil {
		t.Fatalf("relative certificate: %v", err)
	}
	write(t, staged, "server {\n\tlisten 127.0.0.1:3 ssl;\n\tssl_certificate certs/missing.pem;\n\tssl_certificate_key certs/site.key;\n}\n")
	ve := validationError(t, d.nginx(t).ValidateSet(context.Background(), map[string]string{live: staged}))
	if !strings.Contains(ve.Output, d.path("certs/missing.pem")) {
		t.Errorf("missing certificate: %q", ve.Output)
	}
	sameTree(t, d.base, before)
}

func writeSelfSigned(t *testing.T, certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "switchyard.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write(t, certPath, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	write(t, keyPath, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})))
}

// Replacing the main config alone tests the staged file in its place;
// the error names the live main config.
func TestNginxValidateSetMainConfigAlone(t *testing.T) {
	d := newDebianTree(t)
	n := d.nginx(t)
	n.MainConfig, n.Config = "", d.main // a whole-config template: Config is the main config
	src, err := os.ReadFile(d.main)
	if err != nil {
		t.Fatal(err)
	}
	good := stageNext(t, d.main, string(src))
	if err := n.ValidateSet(context.Background(), map[string]string{d.main: good}); err != nil {
		t.Fatalf("main config: %v", err)
	}
	bad := stageNext(t, d.main, strings.Replace(string(src), "worker_processes 1;", "worker_processes one;", 1))
	ve := validationError(t, n.ValidateSet(context.Background(), map[string]string{d.main: bad}))
	if !strings.Contains(ve.Output, d.main+":1") || strings.Contains(ve.Output, bad) || ve.Path != d.main {
		t.Errorf("got Path %s, Output %q", ve.Path, ve.Output)
	}
}

// The distribution's own tree: a new fragment for /etc/nginx/conf.d is
// tested inside /etc/nginx/nginx.conf, found through nginx -V, and nothing
// under /etc changes.
func TestNginxValidateSetRealEtc(t *testing.T) {
	bin := testenv.NginxBinary(t)
	const live = "/etc/nginx/conf.d/switchyard-test.conf"
	main, err := NginxConfPath(context.Background(), bin)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Need(t, main == "/etc/nginx/nginx.conf", fmt.Sprintf("Debian's nginx, loading /etc/nginx/nginx.conf (it loads %s)", main))
	_, err = os.Stat(main)
	testenv.Need(t, err == nil, fmt.Sprintf("Debian's %s: %v", main, err))
	_, err = os.Stat(live)
	testenv.Need(t, err != nil, fmt.Sprintf("no %s (this test only stages it)", live))
	if os.Geteuid() != 0 {
		// Debian's nginx -t opens /var/log/nginx/*.log (www-data, 0640)
		// and creates /var/lib/nginx/* (root's): plain nginx -t fails too.
		testenv.Need(t, false, "root, for nginx -t on Debian's own config")
	}
	restoreTempPaths(t, bin)
	staged := filepath.Join(t.TempDir(), "switchyard-test.conf")
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	write(t, staged, strings.ReplaceAll(ctNginxFragment(listen), "web", "switchyard_test"))
	before := treeHash(t, "/etc/nginx")
	pidBefore := fileState("/run/nginx.pid")

	n := &Nginx{Bin: bin, Config: live, Timeout: 10 * time.Second}
	if err := n.ValidateSet(context.Background(), map[string]string{live: staged}); err != nil {
		t.Fatalf("fragment in %s: %v", main, err)
	}
	sameTree(t, "/etc/nginx", before)
	if now := fileState("/run/nginx.pid"); now != pidBefore {
		t.Errorf("/run/nginx.pid changed: %s -> %s", pidBefore, now)
	}
}

func fileState(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// restoreTempPaths removes, after the test, the compiled-in temp dirs
// (Debian: /var/lib/nginx/body...) that nginx -t creates when it runs
// as root and that did not exist before: a test leaves the machine as it
// found it.
func restoreTempPaths(t *testing.T, bin string) {
	t.Helper()
	out, err := run(context.Background(), 0, bin, "-V")
	if err != nil {
		t.Fatal(err)
	}
	var created []string
	for _, f := range strings.Fields(string(out)) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasSuffix(k, "-temp-path") {
			if _, err := os.Stat(v); errors.Is(err, fs.ErrNotExist) {
				created = append(created, v)
			}
		}
	}
	t.Cleanup(func() {
		for _, dir := range created {
			os.Remove(dir) // only if empty
		}
	})
}

func TestNginxConfPath(t *testing.T) {
	bin := testenv.NginxBinary(t)
	p, err := NginxConfPath(context.Background(), bin)
	if err != nil || !filepath.IsAbs(p) {
		t.Fatalf("NginxConfPath = %q, %v", p, err)
	}
	out, _ := run(context.Background(), 0, bin, "-h")
	if !strings.Contains(string(out), "(default: "+p+")") {
		t.Errorf("NginxConfPath = %s, but nginx -h says %q", p, out)
	}
}
