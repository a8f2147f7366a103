package proxy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/nginxconf"
	"github.com/switchyard/switchyard/scripts/testenv"
)

// The shadow rewrites every include, whatever its quoting, and only
// includes: a commented include, a multi-line argument (lines kept) and
// an "include" that is a map value stay as they are.
func TestNginxShadowRewrite(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "etc/nginx")
	mkdir(t, filepath.Join(conf, "conf.d"))
	main := filepath.Join(conf, "nginx.conf")
	write(t, main, "events {}\n# include nope.conf;\nhttp {\n  include 'conf.d/*.conf';\n  map $a $b { default \"x\ny\"; k include; }\n}\n")
	// Relative to the conf prefix, not to conf.d/, as in nginx.
	write(t, filepath.Join(conf, "conf.d/a.conf"), "include \"mime.types\";\n")
	write(t, filepath.Join(conf, "mime.types"), "types {}\n")
	write(t, filepath.Join(conf, "conf.d/.a.conf.staged-1"), "hidden\n")
	s, err := newNginxShadow(main, map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.remove()
	if err := s.build(main); err != nil {
		t.Fatal(err)
	}
	got := read(t, s.path(main))
	wantMain := `pid "` + s.pidFile() + `"; events {}` + "\n# include nope.conf;\nhttp {\n  include \"" + s.path(conf) +
		"/conf.d/*.conf\";\n  map $a $b { default \"x\ny\"; k include; }\n}\n"
	if got != wantMain {
		t.Errorf("main:\n%s\nwant:\n%s", got, wantMain)
	}
	if got := read(t, s.path(filepath.Join(conf, "conf.d/a.conf"))); got != `include "`+s.path(filepath.Join(conf, "mime.types"))+"\";\n" {
		t.Errorf("a.conf: %s", got)
	}
	// The hidden staged file is no copy: a link, like every other entry.
	if fi, err := os.Lstat(s.path(filepath.Join(conf, "conf.d/.a.conf.staged-1"))); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("hidden file in the shadow: %v, %v", fi, err)
	}
}

func TestApplyEditsKeepsLines(t *testing.T) {
	src := []byte("include \"a\nb\";\nx;\n")
	toks := nginxconf.Tokenize(src)
	got := string(applyEdits(src, []textEdit{{toks[1].Start, toks[1].End, `"c"`}}))
	if got != "include \"c\"\n;\nx;\n" || strings.Count(got, "\n") != strings.Count(string(src), "\n") {
		t.Errorf("got %q", got)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestNginxShadowLuaBlock: issue 9. A Lua block is Lua, not nginx
// syntax: `include "x";` in it is a Lua call and '#', quotes and braces
// are Lua's. The shadow leaves it byte for byte, and nginx -t (with the
// Lua module) passes on the shadow of a tree that has one.
func TestNginxShadowLuaBlock(t *testing.T) {
	bin := testenv.NginxBinary(t)
	mods := luaModuleLines(t, bin)
	dir := t.TempDir()
	conf := filepath.Join(dir, "etc")
	mkdir(t, filepath.Join(conf, "conf.d"))
	main := filepath.Join(conf, "nginx.conf")
	lua := "content_by_lua_block {\n      include \"conf.d/nope.conf\"; -- include x;\n      local n = #t ngx.say(\"} { ;\")\n    }"
	write(t, main, mods+"pid "+dir+"/nginx.pid;\nerror_log stderr;\nevents {}\nhttp {\n  access_log off;\n"+
		"  client_body_temp_path "+dir+"/cb; proxy_temp_path "+dir+"/pt; fastcgi_temp_path "+dir+"/ft; uwsgi_temp_path "+dir+"/ut; scgi_temp_path "+dir+"/st;\n"+
		"  include conf.d/*.conf;\n  server {\n    listen 127.0.0.1:1;\n    location / {\n    "+lua+"\n    }\n  }\n}\n")
	frag := filepath.Join(conf, "conf.d/site.conf")
	write(t, frag, "upstream u { server 127.0.0.1:2; }\n")

	s, err := newNginxShadow(main, map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.remove()
	if err := s.build(main); err != nil {
		t.Fatal(err)
	}
	got := read(t, s.path(main))
	if !strings.Contains(got, lua) || !strings.Contains(got, `include "`+s.path(conf)+`/conf.d/*.conf"`) {
		t.Errorf("shadow of the main config:\n%s", got)
	}

	n := &Nginx{Bin: bin, MainConfig: main, Config: frag, Prefix: dir, Timeout: 10 * time.Second}
	staged := stageNext(t, frag, "upstream u { server 127.0.0.1:3; }\n")
	if err := n.ValidateSet(context.Background(), map[string]string{frag: staged}); err != nil {
		t.Fatalf("ValidateSet with a Lua block in the main config: %v", err)
	}
}
