// Package nginxconf reads nginx configuration files the way nginx reads
// them: tokens, directives and blocks. The proxy package uses it to build
// the shadow trees nginx -t runs on, the membership package to tell what
// changed between two renders. It only reads: nginx itself reports every
// error, with the line, when it tests the file.
package nginxconf

import (
	"slices"
	"strings"
)

// Token kinds.
const (
	Word  = 'w' // a word as nginx sees it
	Semi  = ';'
	Open  = '{'
	Close = '}'
	// Lua is the body of a *_by_lua_block directive (content_by_lua_block
	// { ... }): Lua source, which nginx hands to the Lua module unread.
	// Val is the source between the braces; Start/End cover the braces.
	// It ends its directive, as ';' does.
	Lua = 'l'
)

// Tok is one token of an nginx config.
type Tok struct {
	Kind       byte
	Val        string // a word as nginx sees it: quotes removed, escapes resolved
	Start, End int    // the token's bytes in the source, quotes included
}

// Tokenize splits an nginx config the way ngx_conf_read_token does: '#'
// starts a comment only where a token may start, a word ends at
// whitespace, ';' or '{' (but "${" stays in the word), and a double or
// single quote quotes a word only at its start. The block of a directive
// whose name ends in "_by_lua_block" is one Lua token: its braces, '#',
// ';' and quotes are Lua's (see luaBlockEnd). At the first place nginx
// would reject, it returns the tokens before it.
func Tokenize(src []byte) []Tok {
	var toks []Tok
	stmt := 0 // index of the current directive's first token
	for i := 0; i < len(src); {
		switch c := src[i]; c {
		case ' ', '\t', '\r', '\n':
			i++
		case '#':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case '{':
			if stmt < len(toks) && strings.HasSuffix(toks[stmt].Val, "_by_lua_block") {
				end, ok := luaBlockEnd(src, i+1)
				if !ok {
					return toks
				}
				toks = append(toks, Tok{Kind: Lua, Val: string(src[i+1 : end-1]), Start: i, End: end})
				i = end
			} else {
				toks = append(toks, Tok{Kind: c, Start: i, End: i + 1})
				i++
			}
			stmt = len(toks)
		case ';', '}':
			toks = append(toks, Tok{Kind: c, Start: i, End: i + 1})
			i++
			stmt = len(toks)
		case '"', '\'':
			end, ok := quoteEnd(src, i)
			if !ok {
				return toks
			}
			toks = append(toks, Tok{Kind: Word, Val: unescape(src[i+1 : end-1]), Start: i, End: end})
			i = end
			// nginx wants a space, ';', '{' or ')' after a closing quote.
			if i < len(src) && !strings.ContainsRune(" \t\r\n;{)", rune(src[i])) {
				return toks
			}
		default:
			end := wordEnd(src, i)
			toks = append(toks, Tok{Kind: Word, Val: unescape(src[i:end]), Start: i, End: end})
			i = end
		}
	}
	return toks
}

// quoteEnd returns the index after the quote that closes the one at i;
// a backslash escapes the next byte.
func quoteEnd(src []byte, i int) (int, bool) {
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

// wordEnd returns the index after the unquoted word that starts at i.
func wordEnd(src []byte, i int) int {
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

// escapes are the escapes nginx resolves in a word. Any other backslash
// stays, for the directive (a regex, a glob) to interpret.
var escapes = map[byte]byte{'"': '"', '\'': '\'', '\\': '\\', 't': '\t', 'r': '\r', 'n': '\n'}

// unescape resolves escapes in a word.
func unescape(b []byte) string {
	if !slices.Contains(b, '\\') {
		return string(b)
	}
	var sb strings.Builder
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+1 < len(b) {
			if r, ok := escapes[b[i+1]]; ok {
				sb.WriteByte(r)
				i++
				continue
			}
		}
		sb.WriteByte(b[i])
	}
	return sb.String()
}

// Quote writes s as a double-quoted nginx word that nginx reads back as s.
func Quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// Directive is a directive with its arguments (name first; a Lua block
// directive ends with its Lua token) and the block depth it has in its
// own file.
type Directive struct {
	Args  []Tok
	Depth int
}

// Directives groups tokens into directives. A block directive ("http {")
// counts at the depth it opens from.
func Directives(toks []Tok) []Directive {
	var ds []Directive
	var cur []Tok
	depth := 0
	for _, t := range toks {
		switch t.Kind {
		case Word:
			cur = append(cur, t)
		case Lua:
			ds = append(ds, Directive{Args: append(cur, t), Depth: depth})
			cur = nil
		case Semi, Open:
			if len(cur) > 0 {
				ds = append(ds, Directive{Args: cur, Depth: depth})
			}
			cur = nil
			if t.Kind == Open {
				depth++
			}
		case Close:
			cur = nil
			depth--
		}
	}
	return ds
}

// HasTop reports whether the config src has a directive name outside any
// block.
func HasTop(src []byte, name string) bool {
	for _, d := range Directives(Tokenize(src)) {
		if d.Depth == 0 && d.Args[0].Val == name {
			return true
		}
	}
	return false
}
