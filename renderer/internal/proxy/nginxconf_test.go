package proxy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func words(src string) [][]string {
	var out [][]string
	for _, d := range ngxDirectives(ngxTokenize([]byte(src))) {
		var w []string
		for _, a := range d.args {
			w = append(w, a.val)
		}
		out = append(out, w)
	}
	return out
}

func TestNgxTokenize(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      [][]string
	}{
		{"plain", "include conf.d/*.conf;", [][]string{{"include", "conf.d/*.conf"}}},
		{"comment", "# include x;\nuser a; # include y;\n", [][]string{{"user", "a"}}},
		{"hash inside a word", "set $a b#c;", [][]string{{"set", "$a", "b#c"}}},
		{"double quotes", `include "/a b/*.conf";`, [][]string{{"include", "/a b/*.conf"}}},
		{"single quotes and escapes", `map $x $y { '' close; "a\"b" 'c\'d'; }`,
			[][]string{{"map", "$x", "$y"}, {"", "close"}, {`a"b`, "c'd"}}},
		{"variable braces stay in the word", "return 200 ${host}x;", [][]string{{"return", "200", "${host}x"}}},
		{"brace ends a word", "http{server{listen 80;}}", [][]string{{"http"}, {"server"}, {"listen", "80"}}},
		{"unknown escape kept", `location ~ \.php$ {}`, [][]string{{"location", "~", `\.php$`}}},
		{"unterminated quote stops", "user a;\ninclude \"x;\n", [][]string{{"user", "a"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := words(tc.src); !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNgxDepth(t *testing.T) {
	src := []byte("pid a;\nhttp {\n  server { pid b; }\n}\nevents {}\n")
	var top []string
	for _, d := range ngxDirectives(ngxTokenize(src)) {
		if d.depth == 0 {
			top = append(top, d.args[0].val)
		}
	}
	if !slices.Equal(top, []string{"pid", "http", "events"}) || !ngxHasTop(src, "events") || ngxHasTop(src, "server") {
		t.Errorf("top-level directives %q", top)
	}
}

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
	toks := ngxTokenize(src)
	got := string(applyEdits(src, []textEdit{{toks[1].start, toks[1].end, `"c"`}}))
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
