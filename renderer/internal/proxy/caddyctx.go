package proxy

import (
	"context"
	"path/filepath"
	"strings"
)

// ValidateSet runs caddy validate on the Caddyfile Caddy runs with
// (MainConfig, else Config) and every file it imports, with each staged
// file of replace in place of the live file it stands for. A key of
// replace is a live path: a file the Caddyfile imports, or will import
// once it exists (a new file an import glob matches). Every key must be
// imported, or the set is rejected with ErrNotLoaded.
//
// Replacing the main file alone tests the staged file in its place, as
// Validate does. Otherwise the test runs on a shadow tree in a temp dir
// (see caddyShadow): the live tree is never written. Output and Path name
// the live files, not the shadow copies Caddy read.
func (c *Caddy) ValidateSet(ctx context.Context, replace map[string]string) error {
	replace, err := normalizeSet(replace)
	if err != nil {
		return err
	}
	main := c.MainConfig
	if main == "" {
		main = c.Config
	}
	if main, err = filepath.Abs(main); err != nil {
		return err
	}
	if staged, ok := replace[main]; ok && len(replace) == 1 {
		return c.testConfig(ctx, main, staged, map[string]string{staged: main}, identity(replace))
	}
	s, err := newCaddyShadow(replace)
	if err != nil {
		return err
	}
	defer s.remove()
	if err := s.addFile(main); err != nil {
		return err
	}
	if err := notLoaded("caddy", replace, s.used, main+" and the files it imports"); err != nil {
		return err
	}
	return c.testConfig(ctx, main, s.path(main), map[string]string{s.root: ""}, s.via)
}

// testConfig runs caddy validate on conf, which stands in for main; the
// adapter follows main's name, since a staged name never ends in .json.
func (c *Caddy) testConfig(ctx context.Context, main, conf string, unmap, names map[string]string) error {
	args := append([]string{"validate", "--config", conf}, c.adapter(main)...)
	out, err := run(ctx, c.timeout(), c.Bin, args...)
	if err != nil {
		o := unstage(string(out), unmap)
		return &ValidationError{Proxy: "caddy", Path: culprit(o, names, main), Output: o, Err: err}
	}
	return nil
}

// caddyShadow is a shadow tree (see shadowTree) of a Caddyfile and the
// files it imports, each import pointed at its shadow copy. Caddy
// resolves a relative import against the importing file's dir, and every
// other relative path (a certificate, a root) against its working dir,
// which the shadow does not change: no links to the live tree are needed.
type caddyShadow struct {
	*shadowTree
	snippets map[string]bool // "(name)" blocks met so far: "import name" is no file
}

func newCaddyShadow(replace map[string]string) (*caddyShadow, error) {
	t, err := newShadowTree("caddy", replace)
	if err != nil {
		return nil, err
	}
	s := &caddyShadow{shadowTree: t, snippets: map[string]bool{}}
	t.rewriter = s.rewrite
	return s, nil
}

// rewrite points the imports of live's content src into the shadow. Lines
// are walked in order, as Caddy parses them: a snippet is known from its
// definition on, so "import name" before it is a file import there too.
func (s *caddyShadow) rewrite(live string, src []byte) ([]byte, error) {
	var edits []textEdit
	for _, line := range cdyLines(cdyTokenize(src)) {
		first := line[0].val
		if len(first) > 2 && first[0] == '(' && first[len(first)-1] == ')' {
			s.snippets[first[1:len(first)-1]] = true
		}
		if first != "import" || len(line) < 2 {
			continue
		}
		pat := line[1]
		// A snippet, or a placeholder ({args[0]}, {$ENV}) only Caddy can
		// expand: left as it is.
		if s.snippets[pat.val] || strings.ContainsAny(pat.val, "{}\n") {
			continue
		}
		p := pat.val
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(live), p)
		}
		// Caddy imports what Go's Glob matches, hidden files included.
		for _, m := range s.globMatches(p, func(string) bool { return true }) {
			if err := s.addFile(m); err != nil {
				return nil, err
			}
		}
		edits = append(edits, textEdit{pat.start, pat.end, `"` + strings.ReplaceAll(s.path(p), `"`, `\"`) + `"`})
	}
	return applyEdits(src, edits), nil
}

// cdyTok is one token of a Caddyfile.
type cdyTok struct {
	val        string
	start, end int
	line       int // logical: a backslash before a newline continues the line
}

// cdyTokenize splits a Caddyfile the way Caddy's lexer does: only
// whitespace separates tokens (a brace is a token when it stands alone),
// '#' starts a comment only at a token's start, and a double quote or
// backquote quotes a token only at its start (in double quotes, \" is a
// quote; backquotes are raw). An unterminated quote ends the tokens:
// Caddy reports it.
func cdyTokenize(src []byte) []cdyTok {
	var toks []cdyTok
	line := 1
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '\\' && i+1 < len(src) && src[i+1] == '\n':
			i += 2
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f':
			i++
		case c == '#':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case c == '"' || c == '`':
			end, ok := cdyQuoteEnd(src, i)
			if !ok {
				return toks
			}
			val := string(src[i+1 : end-1])
			if c == '"' {
				val = strings.ReplaceAll(val, `\"`, `"`)
			}
			toks = append(toks, cdyTok{val: val, start: i, end: end, line: line})
			line += strings.Count(val, "\n")
			i = end
		default:
			end := i
			for end < len(src) && !strings.ContainsRune(" \t\r\v\f\n", rune(src[end])) &&
				(src[end] != '\\' || end+1 >= len(src) || src[end+1] != '\n') {
				end++
			}
			toks = append(toks, cdyTok{val: string(src[i:end]), start: i, end: end, line: line})
			i = end
		}
	}
	return toks
}

// cdyQuoteEnd returns the index after the quote that closes the one at i.
func cdyQuoteEnd(src []byte, i int) (int, bool) {
	q := src[i]
	for j := i + 1; j < len(src); j++ {
		switch {
		case q == '"' && src[j] == '\\':
			j++
		case src[j] == q:
			return j + 1, true
		}
	}
	return 0, false
}

// cdyLines groups tokens by logical line: a Caddyfile directive is one.
func cdyLines(toks []cdyTok) [][]cdyTok {
	var lines [][]cdyTok
	for i, t := range toks {
		if i == 0 || t.line != toks[i-1].line {
			lines = append(lines, nil)
		}
		lines[len(lines)-1] = append(lines[len(lines)-1], t)
	}
	return lines
}
