package pipeline

import (
	"bytes"

	"github.com/switchyard/switchyard/renderer/internal/nginxconf"
	"github.com/switchyard/switchyard/renderer/internal/policy"
)

// Counts is the stale guard's measure of a config (see policy.Counts).
type Counts = policy.Counts

// Emptied returns the blocks before had servers in and after has not.
func Emptied(before, after Counts) []string { return policy.Emptied(before, after) }

// placeholderAddr is where consul-template's documented examples point an
// upstream that has no instance ("server 127.0.0.1:65535; # force a
// 502"): nothing listens there, so it is not a backend the guard should
// count as serving.
const placeholderAddr = "127.0.0.1:65535"

// liveServer reports whether a server line can take traffic: not the
// placeholder, and not switched off with the proxy's own keyword.
func liveServer(addr string, params []string, off string) bool {
	if addr == placeholderAddr || addr == "localhost:65535" {
		return false
	}
	for _, p := range params {
		if p == off {
			return false
		}
	}
	return true
}

// NginxUpstreams counts the `server` directives of every `upstream NAME {}`
// block of an nginx config. It reads the file with nginx's own tokenizer
// (package nginxconf), so comments (`#` at the start of a token), quoted
// strings, `${var}` and Lua blocks (`*_by_lua_block { ... }`, whose
// braces and `#` are Lua's) cannot open or close a block or fake a
// server: Consul data ends up in this file, and a service name that looks
// like a directive must not change the guard's view.
func NginxUpstreams(b []byte) Counts {
	out := Counts{}
	type block struct {
		upstream bool
		name     string
	}
	var stack []block
	var stmt []string
	for _, t := range nginxconf.Tokenize(b) {
		switch t.Kind {
		case nginxconf.Word:
			stmt = append(stmt, t.Val)
		case nginxconf.Semi:
			if n := len(stack); n > 0 && stack[n-1].upstream && len(stmt) >= 2 && stmt[0] == "server" && liveServer(stmt[1], stmt[2:], "down") {
				out[stack[n-1].name]++
			}
			stmt = stmt[:0]
		case nginxconf.Open:
			blk := block{}
			if len(stmt) == 2 && stmt[0] == "upstream" {
				blk = block{upstream: true, name: stmt[1]}
				out[blk.name] += 0
			}
			stack = append(stack, blk)
			stmt = stmt[:0]
		case nginxconf.Close:
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			stmt = stmt[:0]
		case nginxconf.Lua:
			stmt = stmt[:0]
		}
	}
	return out
}

// haproxySections are the keywords that start a section of an HAProxy
// config; any of them ends the current one.
var haproxySections = map[string]bool{
	"global": true, "defaults": true, "frontend": true, "backend": true, "listen": true,
	"userlist": true, "peers": true, "resolvers": true, "mailers": true, "program": true,
	"http-errors": true, "ring": true, "cache": true, "fcgi-app": true, "crt-store": true,
	"traces": true, "log-forward": true, "acme": true,
}

// HAProxyBackends counts the `server` lines of every `backend NAME` and
// `listen NAME` section of an HAProxy config. `server` lines of other
// sections (peers, ring) are not backends; `default-server` and
// `server-template` are not counted (the latter resolves through DNS, not
// through the rendered file). Comments start at an unquoted, unescaped '#'.
func HAProxyBackends(b []byte) Counts {
	out := Counts{}
	cur, inProxy := "", false
	for line := range bytes.Lines(b) {
		f := haproxyFields(bytes.TrimSuffix(line, []byte("\n")))
		if len(f) == 0 {
			continue
		}
		if haproxySections[f[0]] {
			inProxy = (f[0] == "backend" || f[0] == "listen") && len(f) >= 2
			cur = ""
			if inProxy {
				cur = f[1]
				out[cur] += 0
			}
			continue
		}
		if inProxy && f[0] == "server" && len(f) >= 3 && liveServer(f[2], f[3:], "disabled") {
			out[cur]++
		}
	}
	return out
}

// haproxyFields splits one HAProxy config line into words, as HAProxy
// does: blanks separate, quotes group, a backslash escapes, an unquoted
// '#' starts a comment.
func haproxyFields(line []byte) []string {
	var out []string
	var word []byte
	inWord := false
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				if c == '\\' && quote == '"' && i+1 < len(line) {
					i++
					c = line[i]
				}
				word = append(word, c)
			}
		case c == '\\' && i+1 < len(line):
			inWord = true
			i++
			word = append(word, line[i])
		case c == '"' || c == '\'':
			inWord = true
			quote = c
		case c == '#':
			i = len(line)
		case c == ' ' || c == '\t' || c == '\r':
			if inWord {
				out = append(out, string(word))
				word, inWord = word[:0], false
			}
		default:
			inWord = true
			word = append(word, c)
		}
	}
	if inWord {
		out = append(out, string(word))
	}
	return out
}
