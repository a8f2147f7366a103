package proxy

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// caddyTree is /etc/caddy in a temp dir: a Caddyfile that defines a
// snippet and imports sites/*.caddy, and one live site that uses the
// snippet, so a site file fails caddy validate alone.
func caddyTree(t *testing.T) (root, main string, c *Caddy) {
	t.Helper()
	state := t.TempDir() // caddy keeps state under $HOME and XDG dirs
	t.Setenv("HOME", state)
	t.Setenv("XDG_DATA_HOME", state)
	t.Setenv("XDG_CONFIG_HOME", state)
	root = t.TempDir()
	conf := filepath.Join(root, "etc/caddy")
	mkdir(t, filepath.Join(conf, "sites"))
	main = filepath.Join(conf, "Caddyfile")
	write(t, main, "{\n\tadmin off\n\tauto_https off\n}\n\n(common) {\n\theader X-Served-By switchyard\n}\n\nimport sites/*.caddy\n")
	write(t, filepath.Join(conf, "sites/app.caddy"), caddySite("app"))
	c = &Caddy{Bin: testenv.CaddyBinary(t), MainConfig: main, Config: filepath.Join(conf, "sites/app.caddy"), Timeout: 10 * time.Second}
	return root, main, c
}

func caddySite(body string) string {
	return fmt.Sprintf("http://127.0.0.1:1 {\n\timport common\n\trespond %q\n}\n", body)
}

func TestCaddyValidateSetImport(t *testing.T) {
	root, _, c := caddyTree(t)
	live := c.Config
	good := stageNext(t, live, caddySite("new"))
	bad := stageNext(t, live, "http://127.0.0.1:1 {\n\timport common\n\tbogus_directive\n}\n")
	before := treeHash(t, root)
	ctx := context.Background()

	ve := validationError(t, c.Validate(ctx, good))
	if !strings.Contains(ve.Output, "File to import not found: common") {
		t.Errorf("the site alone: %v", ve)
	}
	if err := c.ValidateSet(ctx, map[string]string{live: good}); err != nil {
		t.Fatalf("the site in its Caddyfile: %v", err)
	}
	ve = validationError(t, c.ValidateSet(ctx, map[string]string{live: bad}))
	if !strings.Contains(ve.Output, live+":3") || strings.Contains(ve.Output, "switchyard-caddy-") || ve.Path != live {
		t.Errorf("got Path %s, Output %q", ve.Path, ve.Output)
	}
	sameTree(t, root, before)
}

func TestCaddyValidateSetNewFile(t *testing.T) {
	_, _, c := caddyTree(t)
	dir := filepath.Dir(c.Config)
	staged := filepath.Join(t.TempDir(), "api.caddy")
	write(t, staged, strings.Replace(caddySite("api"), "127.0.0.1:1", "127.0.0.1:2", 1))
	ctx := context.Background()
	if err := c.ValidateSet(ctx, map[string]string{filepath.Join(dir, "api.caddy"): staged}); err != nil {
		t.Fatalf("new site: %v", err)
	}
	ve := validationError(t, c.ValidateSet(ctx, map[string]string{filepath.Join(dir, "api.txt"): staged}))
	if !errors.Is(ve, ErrNotLoaded) {
		t.Errorf("api.txt: %v", ve)
	}
}

func TestCdyTokenize(t *testing.T) {
	src := "a {\n\timport \"my sites/*.caddy\" x # import no\n\t#import no\n\trespond `a\"b` \\\n\t\t200\n}\n"
	var got []string
	for _, l := range cdyLines(cdyTokenize([]byte(src))) {
		var w []string
		for _, t := range l {
			w = append(w, t.val)
		}
		got = append(got, strings.Join(w, "|"))
	}
	want := []string{"a|{", "import|my sites/*.caddy|x", `respond|a"b|200`, "}"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
