// Package caddyfile reads a Caddyfile with Caddy's own token rules, as
// far as the renderer needs to find directives in it (the stale guard's
// pools, membership-only changes): blanks separate tokens, quotes and
// backticks group, '#' starts a comment only at a token's start, and '{'
// and '}' open and close blocks only as tokens of their own. So Consul
// data in a quoted string or a comment cannot fake a directive.
package caddyfile

import "strings"

// Matcher reports whether tok, as a directive's first argument, is a
// matcher rather than a value: "*", a path or a named matcher.
func Matcher(tok string) bool {
	return tok == "*" || strings.HasPrefix(tok, "@") || strings.HasPrefix(tok, "/")
}

// Lines splits a Caddyfile into lines of tokens, as Caddy's lexer
// does: a quoted token may span lines and belongs to the line it starts
// on; comments and empty lines are dropped.
func Lines(s string) [][]string { return lines(s, false) }

// QuotedMark starts every quoted token of QuotedLines.
const QuotedMark = "\x01"

// QuotedLines is Lines with every quoted token marked (QuotedMark, then
// the token): two files whose lines are equal are read alike by Caddy,
// which tells some quoted tokens from bare ones.
func QuotedLines(s string) [][]string { return lines(s, true) }

// Unquoted is tok without its QuotedMark.
func Unquoted(tok string) string { return strings.TrimPrefix(tok, QuotedMark) }

func lines(s string, markQuoted bool) [][]string {
	var lines [][]string
	var cur []string
	var tok strings.Builder
	inTok, quoted, quote := false, false, byte(0)
	flush := func() {
		if inTok {
			t := tok.String()
			switch {
			case quoted && markQuoted:
				t = QuotedMark + t
			case quoted && (t == "{" || t == "}"):
				t = "\x00" + t // a quoted brace is a word, never a block
			}
			cur = append(cur, t)
			tok.Reset()
			inTok, quoted = false, false
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && quote == '"' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\') {
				i++
				tok.WriteByte(s[i])
			} else {
				tok.WriteByte(c)
			}
		case (c == '"' || c == '`') && !inTok:
			inTok, quoted, quote = true, true, c
		case c == '#' && !inTok:
			for i < len(s) && s[i] != '\n' {
				i++
			}
			i-- // the newline ends the line below
		case c == '\n':
			flush()
			if len(cur) > 0 {
				lines = append(lines, cur)
				cur = nil
			}
		case c == ' ' || c == '\t' || c == '\r':
			flush()
		default:
			inTok = true
			tok.WriteByte(c)
		}
	}
	flush()
	if len(cur) > 0 {
		lines = append(lines, cur)
	}
	return lines
}
