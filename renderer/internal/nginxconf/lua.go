package nginxconf

// luaBlockEnd returns the index after the '}' that closes a Lua block
// whose body starts at i, as lua-nginx-module's block parser finds it
// (ngx_http_lua_conf_lua_block_parse, 0.10.23): it counts '{' and '}' and
// skips what its lexer matches as Lua strings and comments, namely
// "--[=*[" long comments and "[=*[" long strings up to their closing
// bracket, "--" line comments, and '"' or '\” strings that end on their
// own line ("\\" escapes the next byte). A quote that does not start such
// a string is an ordinary byte, as in that lexer. false: the block or a
// long bracket never closes, which nginx rejects.
func luaBlockEnd(src []byte, i int) (int, bool) {
	level := 1
	for j := i; j < len(src); {
		switch c := src[j]; {
		case c == '{':
			level++
			j++
		case c == '}':
			level--
			j++
			if level == 0 {
				return j, true
			}
		case c == '-' && j+1 < len(src) && src[j+1] == '-':
			if eqs, ok := longOpen(src, j+2); ok {
				end, ok := longClose(src, j+2+eqs+2, eqs)
				if !ok {
					return 0, false
				}
				j = end
				continue
			}
			for j < len(src) && src[j] != '\n' {
				j++
			}
		case c == '[':
			eqs, ok := longOpen(src, j)
			if !ok {
				j++
				continue
			}
			end, ok := longClose(src, j+eqs+2, eqs)
			if !ok {
				return 0, false
			}
			j = end
		case c == '"' || c == '\'':
			j = luaStringEnd(src, j)
		default:
			j++
		}
	}
	return 0, false
}

// longOpen reports whether a Lua long bracket "[=*[" starts at i, and
// its level (the number of '=').
func longOpen(src []byte, i int) (int, bool) {
	if i >= len(src) || src[i] != '[' {
		return 0, false
	}
	j := i + 1
	for j < len(src) && src[j] == '=' {
		j++
	}
	if j < len(src) && src[j] == '[' {
		return j - i - 1, true
	}
	return 0, false
}

// longClose returns the index after the first "]=*]" of level eqs at or
// after i.
func longClose(src []byte, i, eqs int) (int, bool) {
	for j := i; j < len(src); j++ {
		if src[j] != ']' {
			continue
		}
		k := j + 1
		for k < len(src) && src[k] == '=' {
			k++
		}
		if k-j-1 == eqs && k < len(src) && src[k] == ']' {
			return k + 1, true
		}
	}
	return 0, false
}

// luaStringEnd returns the index after the Lua string that starts with
// the quote at i, or i+1 when no string on this line starts there (the
// lexer's pattern "(?:\\[^\n]|[^"\n\\])*" does not match).
func luaStringEnd(src []byte, i int) int {
	q := src[i]
	for j := i + 1; j < len(src); j++ {
		switch src[j] {
		case q:
			return j + 1
		case '\n':
			return i + 1
		case '\\':
			if j+1 >= len(src) || src[j+1] == '\n' {
				return i + 1
			}
			j++
		}
	}
	return i + 1
}
