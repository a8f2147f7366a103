package nginxconf

import (
	"slices"
	"strings"
	"testing"
)

func words(src string) [][]string {
	var out [][]string
	for _, d := range Directives(Tokenize([]byte(src))) {
		var w []string
		for _, a := range d.Args {
			w = append(w, a.Val)
		}
		out = append(out, w)
	}
	return out
}

func TestTokenize(t *testing.T) {
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
		// Issue 9: Lua is not nginx syntax. Its '#', ';', quotes and
		// braces in strings and comments belong to the Lua block.
		{"lua block is one token", "content_by_lua_block { local n = #t; ngx.say(\"}\") }\ninclude x;",
			[][]string{{"content_by_lua_block", ` local n = #t; ngx.say("}") `}, {"include", "x"}}},
		{"lua block with args before it", "set_by_lua_block $v { return '{' }\nuser a;",
			[][]string{{"set_by_lua_block", "$v", ` return '{' `}, {"user", "a"}}},
		{"lua tables nest", "init_by_lua_block { t = { a = { } } }\nuser a;",
			[][]string{{"init_by_lua_block", " t = { a = { } } "}, {"user", "a"}}},
		{"lua comments", "init_by_lua_block {\n-- } include evil;\n--[[ } ]] --[==[ ]] } ]==]\n}\nuser a;",
			[][]string{{"init_by_lua_block", "\n-- } include evil;\n--[[ } ]] --[==[ ]] } ]==]\n"}, {"user", "a"}}},
		{"lua long string", "init_by_lua_block { s = [=[ } ]] ]=] }\nuser a;",
			[][]string{{"init_by_lua_block", " s = [=[ } ]] ]=] "}, {"user", "a"}}},
		{"lua quote without an end on its line is a byte", "init_by_lua_block { a = \"{\n }\n}\nuser a;",
			[][]string{{"init_by_lua_block", " a = \"{\n }\n"}, {"user", "a"}}},
		{"unterminated lua block stops", "user a;\ncontent_by_lua_block { t = { }", [][]string{{"user", "a"}}},
		{"lua long bracket never closed stops", "user a;\ninit_by_lua_block { s = [[ }\n}", [][]string{{"user", "a"}}},
		{"a plain block named like lua is not", "location /by_lua_block { return 200; }",
			[][]string{{"location", "/by_lua_block"}, {"return", "200"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := words(tc.src); !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDepth(t *testing.T) {
	src := []byte("pid a;\nhttp {\n  server { pid b; }\n}\nevents {}\n")
	var top []string
	for _, d := range Directives(Tokenize(src)) {
		if d.Depth == 0 {
			top = append(top, d.Args[0].Val)
		}
	}
	if !slices.Equal(top, []string{"pid", "http", "events"}) || !HasTop(src, "events") || HasTop(src, "server") {
		t.Errorf("top-level directives %q", top)
	}
}

func TestLuaBlockKeepsDepth(t *testing.T) {
	src := []byte("http {\n init_by_lua_block { x = {} }\n server { listen 80; }\n}\nevents {}\n")
	var got []string
	for _, d := range Directives(Tokenize(src)) {
		got = append(got, strings.Repeat(">", d.Depth)+d.Args[0].Val)
	}
	if want := []string{"http", ">init_by_lua_block", ">server", ">>listen", "events"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParse(t *testing.T) {
	src := []byte(`http {
    upstream u {
        server 10.0.0.1:80 weight=2;
        balancer_by_lua_block { switchyard.balance("u") }
        keepalive 8;
    }
}
}
events {`)
	nodes := Parse(src)
	if len(nodes) != 2 || nodes[0].Name() != "http" || nodes[1].Name() != "events" || !nodes[1].Block {
		t.Fatalf("top: %+v", nodes)
	}
	up := nodes[0].Children[0]
	var got []string
	for _, c := range up.Children {
		got = append(got, strings.Join(c.Vals(), "|"))
	}
	want := []string{"server|10.0.0.1:80|weight=2", `balancer_by_lua_block| switchyard.balance("u") `, "keepalive|8"}
	if !slices.Equal(got, want) || up.Children[1].Args[1].Kind != Lua {
		t.Errorf("upstream: %q", got)
	}
}

func TestQuote(t *testing.T) {
	s := `a "b" \c`
	toks := Tokenize([]byte("x " + Quote(s) + ";"))
	if len(toks) != 3 || toks[1].Val != s {
		t.Errorf("round trip: %+v", toks)
	}
}
