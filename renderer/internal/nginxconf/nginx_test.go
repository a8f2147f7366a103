package nginxconf

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// luaModules returns the load_module lines of nginx's Lua module (Debian:
// libnginx-mod-http-lua), failing under CI when it is not installed.
func luaModules(t *testing.T, bin string) string {
	t.Helper()
	out, _ := exec.Command(bin, "-V").CombinedOutput()
	dir := "/usr/lib/nginx/modules"
	if m := regexp.MustCompile(`--modules-path=(\S+)`).FindSubmatch(out); m != nil {
		dir = string(m[1])
	}
	lua := filepath.Join(dir, "ngx_http_lua_module.so")
	_, err := os.Stat(lua)
	testenv.Need(t, err == nil, "nginx Lua module "+lua+" (Debian: libnginx-mod-http-lua, lua-resty-core)")
	return "load_module " + filepath.Join(dir, "ndk_http_module.so") + ";\nload_module " + lua + ";\n"
}

// accepts predicts, from Tokenize alone, whether nginx reads src to its
// end with every block closed.
func accepts(src string) bool {
	toks := Tokenize([]byte(src))
	if len(toks) == 0 || toks[len(toks)-1].End != len(strings.TrimRight(src, " \n")) {
		return false
	}
	depth := 0
	for _, t := range toks {
		switch t.Kind {
		case Open:
			depth++
		case Close:
			depth--
		}
	}
	return depth == 0
}

// TestLuaBlocksAsNginxReadsThem: where a Lua block ends is what nginx
// -t with lua-nginx-module says, not a guess: each body is tested by the
// real nginx (content_by_lua_block code is compiled at the first
// request, so only the block's extent decides) and by Tokenize.
func TestLuaBlocksAsNginxReadsThem(t *testing.T) {
	bin := testenv.NginxBinary(t)
	mods := luaModules(t, bin)
	dir := t.TempDir()
	for name, body := range map[string]string{
		"brace in double quotes":     ` ngx.say("}") `,
		"brace in single quotes":     ` ngx.say('{') `,
		"line comment":               " -- }\n ",
		"long comment":               " --[[ }\n ]] ",
		"long string with level":     ` local s = [==[ } ]] ]==] `,
		"quote left open on a line":  " local s = \"{\n x = 1 ",
		"length operator":            ` local n = #t `,
		"line comment with brackets": " x = 1 -- ]] }\n ",
		"escaped quote":              ` s = 'a\'b}' `,
		"long string never closed":   ` s = [[ } `,
		"nested tables":              ` t = { { a = "}" }, {} } `,
		"escaped backslash":          ` s = "\\" t = "}" `,
	} {
		t.Run(name, func(t *testing.T) {
			conf := mods + "pid " + filepath.Join(dir, "nginx.pid") + ";\nerror_log stderr;\nevents {}\nhttp {\n" +
				"client_body_temp_path " + dir + "/cb;\nproxy_temp_path " + dir + "/pt;\nfastcgi_temp_path " + dir + "/ft;\n" +
				"uwsgi_temp_path " + dir + "/ut;\nscgi_temp_path " + dir + "/st;\naccess_log off;\n" +
				"server {\nlisten 127.0.0.1:1;\nlocation / {\ncontent_by_lua_block {" + body + "}\n}\n}\n}\n"
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".conf")
			if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "-t", "-q", "-e", "stderr", "-p", dir+"/", "-c", path).CombinedOutput()
			if nginx, ours := err == nil, accepts(conf); nginx != ours {
				t.Errorf("nginx accepts: %v (%s), Tokenize predicts: %v", nginx, strings.TrimSpace(string(out)), ours)
			}
		})
	}
}
