package funcs

import "testing"

func TestQuoting(t *testing.T) {
	for _, c := range []struct{ in, nginx, haproxy string }{
		{"plain", `"plain"`, `'plain'`},
		{`a"b`, `"a\"b"`, `'a"b'`},
		{`x; include /etc/passwd;`, `"x; include /etc/passwd;"`, `'x; include /etc/passwd;'`},
		{"line\nbreak", `"linebreak"`, `'linebreak'`},
		{`$host\`, `"host\\"`, `'$host\'`},
		{`it's`, `"it's"`, `'it'\''s'`},
	} {
		if got := NginxQuote(c.in); got != c.nginx {
			t.Errorf("NginxQuote(%q) = %s, want %s", c.in, got, c.nginx)
		}
		if got := HAProxyQuote(c.in); got != c.haproxy {
			t.Errorf("HAProxyQuote(%q) = %s, want %s", c.in, got, c.haproxy)
		}
	}
}

func TestTokens(t *testing.T) {
	for s, want := range map[string]bool{"web": true, "web-2_a": true, "a.b": false, "": false, "-x": false, "a b": false, "x;y": false} {
		if IsToken(s) != want {
			t.Errorf("IsToken(%q) = %v", s, !want)
		}
	}
	for s, want := range map[string]bool{"10.0.0.1": true, "fd00::1": true, "db.internal": true, "1.2.3.4 backup": false, "a;b": false} {
		if IsHost(s) != want {
			t.Errorf("IsHost(%q) = %v", s, !want)
		}
	}
	if SafeComment("a\nb\r") != "ab" {
		t.Error("SafeComment kept control characters")
	}
}
