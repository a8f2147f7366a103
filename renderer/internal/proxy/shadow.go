package proxy

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// shadowTree is a copy of the files a proxy's configuration loads, in a
// temp dir, where staged files stand in for the live ones they replace:
// the proxy tests it without a write to the live tree. The live file
// /a/b.conf is at root/a/b.conf, so an error the proxy reports maps back
// to the live path by dropping root. rewriter points a file's own
// includes into the shadow and walks them (addFile).
type shadowTree struct {
	dir      string            // the temp dir; holds root
	root     string            // live path p is at root+p
	replace  map[string]string // live -> staged, absolute and clean
	byReal   map[string]string // symlink-resolved live -> key of replace
	staging  map[string]bool   // staged paths: never live matches of a glob
	used     map[string]bool   // keys of replace the walk met
	via      map[string]string // walked live path -> the key whose staged file it took
	done     map[string]bool   // live files already walked
	rewriter func(live string, src []byte) ([]byte, error)
}

func newShadowTree(proxy string, replace map[string]string) (*shadowTree, error) {
	dir, err := os.MkdirTemp("", "switchyard-"+proxy+"-")
	if err != nil {
		return nil, fmt.Errorf("%s: shadow tree: %w", proxy, err)
	}
	s := &shadowTree{dir: dir, root: filepath.Join(dir, "root"), replace: replace,
		byReal: map[string]string{}, staging: map[string]bool{}, used: map[string]bool{},
		via: map[string]string{}, done: map[string]bool{}}
	// root starts every rewritten include, globs too: a glob character in
	// it would change what the proxy matches.
	if strings.ContainsAny(dir, `*?[\`) {
		s.remove()
		return nil, fmt.Errorf("%s: shadow tree: temp dir %s has a glob character (set TMPDIR)", proxy, dir)
	}
	for live, staged := range replace {
		// The pipeline renames over a symlink's target, so the staged
		// file replaces whatever path resolves to that target.
		if real, err := filepath.EvalSymlinks(live); err == nil {
			s.byReal[real] = live
		}
		if abs, err := filepath.Abs(staged); err == nil {
			s.staging[abs] = true
		}
	}
	return s, nil
}

func (s *shadowTree) remove() { os.RemoveAll(s.dir) } // unlinks symlinks, never their targets

// path is the shadow location of the live path p.
func (s *shadowTree) path(p string) string { return s.root + p }

// staged returns the staged file standing in for live, if any, and marks
// its key used.
func (s *shadowTree) staged(live string) (string, bool) {
	key := live
	if _, ok := s.replace[key]; !ok {
		real, err := filepath.EvalSymlinks(live)
		if err != nil {
			return "", false
		}
		if key, ok = s.byReal[real]; !ok {
			return "", false
		}
	}
	s.used[key] = true
	s.via[live] = key
	return s.replace[key], true
}

// addFile copies live (or its staged stand-in) into the shadow, with its
// includes rewritten and walked.
func (s *shadowTree) addFile(live string) error {
	if s.done[live] {
		return nil // included twice, or an include cycle
	}
	s.done[live] = true
	src, replaced := s.staged(live)
	if !replaced {
		src = live
	}
	b, err := os.ReadFile(src)
	if err != nil && replaced {
		return fmt.Errorf("read staged %s for %s: %w", src, live, err)
	}
	if err != nil {
		// The proxy cannot read it either, and says so with the line
		// that includes it: better than any message of ours.
		return nil
	}
	out, err := s.rewriter(live, b)
	if err != nil {
		return err
	}
	dst := s.path(live)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, out, 0o644)
}

// globMatches is what Go's Glob matches for pattern in the live tree, plus
// the keys of replace it will match once they exist, each kept only if
// keep says the proxy loads it; staged files are never matches.
func (s *shadowTree) globMatches(pattern string, keep func(string) bool) []string {
	found, _ := filepath.Glob(pattern) // a bad pattern: the proxy reports it
	var out []string
	for _, m := range found {
		if keep(m) && !s.staging[m] {
			out = append(out, m)
		}
	}
	for live := range s.replace {
		if ok, _ := filepath.Match(pattern, live); ok && keep(live) && !slices.Contains(out, live) {
			out = append(out, live)
		}
	}
	sort.Strings(out)
	return out
}

// textEdit replaces the bytes start:end of a config file.
type textEdit struct {
	start, end int
	to         string
}

// applyEdits returns src with the edits made. A replaced span that held
// newlines is followed by as many, so the proxy's line numbers for the
// rest of the file stay those of the live file.
func applyEdits(src []byte, edits []textEdit) []byte {
	slices.SortFunc(edits, func(a, b textEdit) int { return a.start - b.start })
	var out []byte
	last := 0
	for _, e := range edits {
		out = append(out, src[last:e.start]...)
		out = append(out, e.to...)
		out = append(out, strings.Repeat("\n", strings.Count(string(src[e.start:e.end]), "\n"))...)
		last = e.end
	}
	return append(out, src[last:]...)
}
