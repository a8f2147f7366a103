package proxy

import (
	"slices"
	"strings"
)

// ngxTok is one token of an nginx config: a word (kind 'w') or one of
// ';', '{', '}'.
type ngxTok struct {
	kind       byte
	val        string // a word as nginx sees it: quotes removed, escapes resolved
	start, end int    // the token's bytes in the source, quotes included
}

// ngxTokenize splits an nginx config the way ngx_conf_read_token does:
// '#' starts a comment only where a token may start, a word ends at
// whitespace, ';' or '{' (but "${" stays in the word), and a double or single
// quote quotes a word only at its start. At the first place nginx would reject,
// it returns the tokens before it: nginx reports that error itself, with
// the line, when it tests the config.
func ngxTokenize(src []byte) []ngxTok {
	var toks []ngxTok
	for i := 0; i < len(src); {
		switch c := src[i]; c {
		case ' ', '\t', '\r', '\n':
			i++
		case '#':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case ';', '{', '}':
			toks = append(toks, ngxTok{kind: c, start: i, end: i + 1})
			i++
		case '"', '\'':
			end, ok := ngxQuoteEnd(src, i)
			if !ok {
				return toks
			}
			toks = append(toks, ngxTok{kind: 'w', val: ngxUnescape(src[i+1 : end-1]), start: i, end: end})
			i = end
			// nginx wants a space, ';', '{' or ')' after a closing quote.
			if i < len(src) && !strings.ContainsRune(" \t\r\n;{)", rune(src[i])) {
				return toks
			}
		default:
			end := ngxWordEnd(src, i)
			toks = append(toks, ngxTok{kind: 'w', val: ngxUnescape(src[i:end]), start: i, end: end})
			i = end
		}
	}
	return toks
}

// ngxQuoteEnd returns the index after the quote that closes the one at i;
// a backslash escapes the next byte.
func ngxQuoteEnd(src []byte, i int) (int, bool) {
	q := src[i]
	for j := i + 1; j < len(src); j++ {
		switch src[j] {
		case '\\':
			j++
		case q:
			return j + 1, true
		}
	}
	return 0, false
}

// ngxWordEnd returns the index after the unquoted word that starts at i.
func ngxWordEnd(src []byte, i int) int {
	variable := false
	j := i
	for j < len(src) {
		c := src[j]
		if j > i {
			if c == '{' && variable { // "${name}"
				j++
				continue
			}
			if c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ';' || c == '{' {
				break
			}
		}
		variable = c == '$'
		if c == '\\' {
			j++
		}
		j++
	}
	return min(j, len(src))
}

// ngxEscapes are the escapes nginx resolves in a word. Any other
// backslash stays, for the directive (a regex, a glob) to interpret.
var ngxEscapes = map[byte]byte{'"': '"', '\'': '\'', '\\': '\\', 't': '\t', 'r': '\r', 'n': '\n'}

// ngxUnescape resolves ngxEscapes in a word.
func ngxUnescape(b []byte) string {
	if !slices.Contains(b, '\\') {
		return string(b)
	}
	var sb strings.Builder
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+1 < len(b) {
			if r, ok := ngxEscapes[b[i+1]]; ok {
				sb.WriteByte(r)
				i++
				continue
			}
		}
		sb.WriteByte(b[i])
	}
	return sb.String()
}

// ngxQuote writes s as a double-quoted nginx word that ngxUnescape (and
// nginx) reads back as s.
func ngxQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// ngxDirective is a directive with its arguments (name first) and the
// block depth it has in its own file.
type ngxDirective struct {
	args  []ngxTok
	depth int
}

// ngxDirectives groups tokens into directives. A block directive ("http
// {") counts at the depth it opens from.
func ngxDirectives(toks []ngxTok) []ngxDirective {
	var ds []ngxDirective
	var cur []ngxTok
	depth := 0
	for _, t := range toks {
		switch t.kind {
		case 'w':
			cur = append(cur, t)
		case ';', '{':
			if len(cur) > 0 {
				ds = append(ds, ngxDirective{args: cur, depth: depth})
			}
			cur = nil
			if t.kind == '{' {
				depth++
			}
		case '}':
			cur = nil
			depth--
		}
	}
	return ds
}

// ngxHasTop reports whether the config src has a directive name outside
// any block.
func ngxHasTop(src []byte, name string) bool {
	for _, d := range ngxDirectives(ngxTokenize(src)) {
		if d.depth == 0 && d.args[0].val == name {
			return true
		}
	}
	return false
}
