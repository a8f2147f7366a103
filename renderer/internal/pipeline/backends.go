package pipeline

import (
	"bytes"
	"sort"
)

// Counts is the stale guard's measure of a config: backend servers per
// block (an nginx upstream, an HAProxy backend or listen section), keyed by
// the block's name. A block that is present with no server has 0.
//
// Counting per block, not over the whole file, is the point: after a Consul
// agent restart the registrars come back service by service, and
// consul-template's watches come back one at a time, so a render can keep
// most servers of the file while one upstream loses all of its own. That
// upstream then answers 502 for a whole service although the file-wide
// removal looks small (2 of 6).
type Counts map[string]int

// Total is the number of servers over all blocks.
func (c Counts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// Emptied returns, sorted, the blocks that had at least one server in
// before and have none, or are gone, in after.
func Emptied(before, after Counts) []string {
	var out []string
	for name, n := range before {
		if n > 0 && after[name] == 0 {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// suspicious is the stale guard's decision, a pure function of the two
// measures: hold a render that removes more than maxRemoval of all the
// servers, or that empties (or drops) a block that had servers.
func suspicious(before, after Counts, maxRemoval float64) (hold bool, emptied []string) {
	emptied = Emptied(before, after)
	b, a := before.Total(), after.Total()
	removed := b - a
	frac := b > 0 && removed > 0 && float64(removed)/float64(b) > maxRemoval
	return frac || len(emptied) > 0, emptied
}

// NginxUpstreams counts the `server` directives of every `upstream NAME {}`
// block of an nginx config. It follows nginx's own tokenizer closely
// enough that comments (`#` at the start of a token), quoted strings and
// `${var}` cannot open or close a block or fake a server: Consul data ends
// up in this file, and a service name that looks like a directive must not
// change the guard's view.
func NginxUpstreams(b []byte) Counts {
	out := Counts{}
	type block struct {
		upstream bool
		name     string
	}
	var stack []block
	var stmt []string
	nginxTokens(b, func(tok string, special byte) {
		switch special {
		case 0:
			stmt = append(stmt, tok)
		case ';':
			if n := len(stack); n > 0 && stack[n-1].upstream && len(stmt) >= 2 && stmt[0] == "server" {
				out[stack[n-1].name]++
			}
			stmt = stmt[:0]
		case '{':
			blk := block{}
			if len(stmt) == 2 && stmt[0] == "upstream" {
				blk = block{upstream: true, name: stmt[1]}
				out[blk.name] += 0
			}
			stack = append(stack, blk)
			stmt = stmt[:0]
		case '}':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			stmt = stmt[:0]
		}
	})
	return out
}

// nginxTokens calls emit for every word (special 0, quotes removed) and
// every ';', '{' and '}' of an nginx config, skipping comments.
func nginxTokens(b []byte, emit func(tok string, special byte)) {
	var word []byte
	inWord := false
	flush := func() {
		if inWord {
			emit(string(word), 0)
			word, inWord = word[:0], false
		}
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case !inWord && c == '#':
			for i < len(b) && b[i] != '\n' {
				i++
			}
		case !inWord && (c == '"' || c == '\''):
			q := c
			inWord = true
			for i++; i < len(b) && b[i] != q; i++ {
				if b[i] == '\\' && i+1 < len(b) {
					i++
				}
				word = append(word, b[i])
			}
			flush()
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			flush()
		case c == ';' || c == '}':
			flush()
			emit("", c)
		case c == '{':
			if inWord && word[len(word)-1] == '$' {
				// ${var}: part of the word, up to its '}'.
				for ; i < len(b) && b[i] != '}'; i++ {
					word = append(word, b[i])
				}
				if i < len(b) {
					word = append(word, '}')
				}
				continue
			}
			flush()
			emit("", c)
		case c == '\\' && i+1 < len(b):
			inWord = true
			i++
			word = append(word, b[i])
		default:
			inWord = true
			word = append(word, c)
		}
	}
	flush()
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
		if inProxy && f[0] == "server" && len(f) >= 3 {
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
