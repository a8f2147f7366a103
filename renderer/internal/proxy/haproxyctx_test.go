package proxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// haproxyBase holds global and a named defaults section; the fragments
// use it ("from web"), so they fail haproxy -c alone.
const haproxyBase = `global
    hard-stop-after 5s
defaults web
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
`

func haproxySite(name, addr string) string {
	return fmt.Sprintf(`frontend fe_%[1]s from web
    bind %[2]s
    default_backend be_%[1]s
backend be_%[1]s from web
    server s1 127.0.0.1:9001
`, name, addr)
}

func TestHAProxyValidateSetTwoFiles(t *testing.T) {
	bin := testenv.HAProxyBinary(t)
	dir := t.TempDir()
	base, site := filepath.Join(dir, "haproxy.cfg"), filepath.Join(dir, "site.cfg")
	write(t, base, haproxyBase)
	write(t, site, haproxySite("a", "127.0.0.1:1"))
	good := stageNext(t, site, haproxySite("b", "127.0.0.1:2"))
	bad := stageNext(t, site, haproxySite("c", "127.0.0.1:3")+"    bogus_keyword on\n")
	h := &HAProxy{Bin: bin, Config: site, Files: []string{base, site}, Timeout: 5 * time.Second}
	before := treeHash(t, dir)

	ve := validationError(t, h.Validate(context.Background(), good))
	if ve.Path != good {
		t.Errorf("the fragment alone: %v", ve)
	}
	if err := h.ValidateSet(context.Background(), map[string]string{site: good}); err != nil {
		t.Fatalf("the fragment after the base file: %v", err)
	}
	ve = validationError(t, h.ValidateSet(context.Background(), map[string]string{site: bad}))
	t.Log(ve)
	if !strings.Contains(ve.Output, site+":6") || strings.Contains(ve.Output, bad) || ve.Path != site {
		t.Errorf("got Path %s, Output %q", ve.Path, ve.Output)
	}
	sameTree(t, dir, before)
}

// A -f directory: HAProxy loads its *.cfg files in byte order, so the
// named defaults in 00-defaults.cfg come before the sites that use them.
func TestHAProxyValidateSetDirectory(t *testing.T) {
	bin := testenv.HAProxyBinary(t)
	dir := t.TempDir()
	base, confd := filepath.Join(dir, "haproxy.cfg"), filepath.Join(dir, "conf.d")
	mkdir(t, confd)
	write(t, base, "global\n    hard-stop-after 5s\n")
	write(t, filepath.Join(confd, "00-defaults.cfg"), strings.TrimPrefix(haproxyBase, "global\n    hard-stop-after 5s\n"))
	app := filepath.Join(confd, "10-app.cfg")
	write(t, app, haproxySite("app", "127.0.0.1:1"))
	write(t, filepath.Join(confd, "notes.txt"), "not a config\n")
	h := &HAProxy{Bin: bin, Files: []string{base, confd}, Timeout: 5 * time.Second}
	ctx := context.Background()

	// A new file, not yet in the dir, in its place in the order.
	fresh := filepath.Join(confd, "20-new.cfg")
	staged := filepath.Join(t.TempDir(), "20-new.cfg")
	write(t, staged, haproxySite("new", "127.0.0.1:2"))
	if err := h.ValidateSet(ctx, map[string]string{fresh: staged}); err != nil {
		t.Fatalf("new file in the dir: %v", err)
	}
	// A staged replacement of a live file; the hidden staged file next to
	// it is not loaded a second time.
	good := stageNext(t, app, haproxySite("app", "127.0.0.1:3"))
	if err := h.ValidateSet(ctx, map[string]string{app: good, fresh: staged}); err != nil {
		t.Fatalf("replaced file in the dir: %v", err)
	}
	bad := stageNext(t, app, "frontend fe_app from nowhere\n    bind 127.0.0.1:3\n")
	ve := validationError(t, h.ValidateSet(ctx, map[string]string{app: bad}))
	if !strings.Contains(ve.Output, app+":1") || ve.Path != app {
		t.Errorf("got Path %s, Output %q", ve.Path, ve.Output)
	}
	// A name the dir does not load is never tested: rejected.
	ve = validationError(t, h.ValidateSet(ctx, map[string]string{filepath.Join(confd, "notes.txt"): staged}))
	if !errors.Is(ve, ErrNotLoaded) {
		t.Errorf("notes.txt: %v", ve)
	}
}

func TestHAProxyDirOrder(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b.cfg", "A.cfg", "a.cfg", ".h.cfg", "x.conf"} {
		write(t, filepath.Join(dir, n), "")
	}
	mkdir(t, filepath.Join(dir, "sub.cfg"))
	got := haproxyDir(dir, map[string]string{filepath.Join(dir, "0.cfg"): "/s"}, map[string]bool{})
	var names []string
	for _, p := range got {
		names = append(names, filepath.Base(p))
	}
	if strings.Join(names, " ") != "0.cfg A.cfg a.cfg b.cfg" {
		t.Errorf("got %q", names)
	}
	if _, err := os.Stat(filepath.Join(dir, "0.cfg")); err == nil {
		t.Error("listing created a file")
	}
}
