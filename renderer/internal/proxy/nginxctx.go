package proxy

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/switchyard/switchyard/renderer/internal/nginxconf"
)

// ValidateSet runs nginx -t on the configuration nginx loads (the main
// config and every file it includes), with each staged file of replace in
// place of the live file it stands for. A key of replace is a live path: a
// file nginx loads, or will load once it exists (a new fragment that an
// include glob matches). Every key must be loaded, or the set is rejected
// with ErrNotLoaded: a fragment nothing includes would pass untested.
//
// Replacing the main config alone tests the staged file in its place, as
// Validate does. Otherwise the test runs on a shadow tree in a temp dir
// (see nginxShadow): the live tree is never written. nginx's messages
// name the shadow copies; Output and Path name the live files instead.
func (n *Nginx) ValidateSet(ctx context.Context, replace map[string]string) error {
	replace, err := normalizeSet(replace)
	if err != nil {
		return err
	}
	main, err := n.mainConfig(ctx, replace)
	if err != nil {
		return err
	}
	if staged, ok := replace[main]; ok && len(replace) == 1 {
		return n.testConfig(ctx, main, staged, map[string]string{staged: main}, identity(replace))
	}
	s, err := newNginxShadow(main, replace)
	if err != nil {
		return err
	}
	defer s.remove()
	if err := s.build(main); err != nil {
		return fmt.Errorf("nginx: shadow tree of %s: %w", main, err)
	}
	if err := notLoaded("nginx", replace, s.used, main+" and the files it includes"); err != nil {
		return err
	}
	return n.testConfig(ctx, main, s.path(main), map[string]string{s.root: ""}, s.via)
}

// testConfig runs nginx -t on conf, which stands in for the main config
// main, and turns a rejection into a ValidationError that names live
// paths: unmap maps what nginx printed back, names finds the culprit.
func (n *Nginx) testConfig(ctx context.Context, main, conf string, unmap, names map[string]string) error {
	args := []string{"-t", "-q", "-e", "stderr"}
	if p := n.setPrefix(main); p != "" {
		args = append(args, "-p", strings.TrimSuffix(p, "/")+"/")
	}
	out, err := run(ctx, n.timeout(), n.Bin, append(args, "-c", conf)...)
	if err != nil {
		o := unstage(string(out), unmap)
		return &ValidationError{Proxy: "nginx", Path: culprit(o, names, main), Output: o, Err: err}
	}
	return nil
}

// setPrefix is the -p of a set's test: Prefix if set; the dir of Config
// when Config is the main config (what base does, and what a supervised
// nginx runs with); otherwise none, so nginx uses its compiled-in prefix
// like the distribution's nginx it stands for (Debian's load_module
// modules/... lines resolve against it).
func (n *Nginx) setPrefix(main string) string {
	if n.Prefix != "" {
		return n.Prefix
	}
	if n.CompiledPrefix {
		return ""
	}
	if cfg, err := filepath.Abs(n.Config); err == nil && n.Config != "" && cfg == main {
		return filepath.Dir(cfg)
	}
	return ""
}

// mainConfig is the config nginx loads: MainConfig if set; Config when it
// is one (we supervise nginx with -c Config, or Config has a top-level
// events block, which every main config needs and a fragment included in
// http cannot have); otherwise the one nginx loads without -c.
func (n *Nginx) mainConfig(ctx context.Context, replace map[string]string) (string, error) {
	if n.MainConfig != "" {
		return filepath.Abs(n.MainConfig)
	}
	if n.Config != "" {
		cfg, err := filepath.Abs(n.Config)
		if err != nil {
			return "", err
		}
		if n.Supervise || isNginxMain(cfg, replace) {
			return cfg, nil
		}
	}
	main, err := NginxConfPath(ctx, n.Bin)
	if err != nil {
		return "", fmt.Errorf("nginx: find the main config (set it explicitly): %w", err)
	}
	return main, nil
}

// isNginxMain reports whether path, or the staged file standing in for
// it, has a top-level events block.
func isNginxMain(path string, replace map[string]string) bool {
	if staged, ok := replace[path]; ok {
		path = staged
	}
	b, err := os.ReadFile(path)
	return err == nil && nginxconf.HasTop(b, "events")
}

var (
	confPathFlag = regexp.MustCompile(`--conf-path=(\S+)`)
	confPathHelp = regexp.MustCompile(`set configuration file \(default: ([^)]+)\)`)
)

// NginxConfPath returns the main config bin loads when started without
// -c: the --conf-path it was built with (/etc/nginx/nginx.conf on Debian).
func NginxConfPath(ctx context.Context, bin string) (string, error) {
	out, err := run(ctx, 0, bin, "-V")
	if err != nil {
		return "", fmt.Errorf("%s -V: %w: %s", bin, err, strings.TrimSpace(string(out)))
	}
	if m := confPathFlag.FindSubmatch(out); m != nil && filepath.IsAbs(string(m[1])) {
		return string(m[1]), nil
	}
	// Built without an absolute --conf-path, the default was resolved
	// against the prefix at build time; only -h prints the result.
	out, err = run(ctx, 0, bin, "-h")
	if m := confPathHelp.FindSubmatch(out); err == nil && m != nil && filepath.IsAbs(string(m[1])) {
		return string(m[1]), nil
	}
	return "", fmt.Errorf("%s: neither -V nor -h names an absolute configuration file", bin)
}

// nginxShadow is a shadow tree (see shadowTree) of the configuration
// nginx loads. Every include is rewritten to its shadow location (a glob
// stays a glob), so nginx reads only shadow copies of what it includes.
// Other relative paths (ssl_certificate certs/x.pem) resolve against the
// conf prefix, the main config's dir: every entry of the live conf dir (and
// of its subdirs the shadow has) that the shadow does not copy is a
// symlink to the live one. The top-level pid directive points into the
// temp dir, because nginx -t creates the pid file.
type nginxShadow struct {
	*shadowTree
	confDir string // the live conf prefix: the main config's dir
	pid     bool   // some walked file has a top-level pid
}

func newNginxShadow(main string, replace map[string]string) (*nginxShadow, error) {
	t, err := newShadowTree("nginx", replace)
	if err != nil {
		return nil, err
	}
	s := &nginxShadow{shadowTree: t, confDir: filepath.Dir(main)}
	t.rewriter = func(_ string, src []byte) ([]byte, error) { return s.rewrite(src) }
	return s, nil
}

func (s *nginxShadow) pidFile() string { return filepath.Join(s.dir, "nginx.pid") }

// build walks main and what it includes, then links the rest of the conf
// dir in. The links come last: once they exist, a write into the shadow
// could land in the live tree.
func (s *nginxShadow) build(main string) error {
	if err := os.MkdirAll(s.path(s.confDir), 0o755); err != nil {
		return err
	}
	if err := s.addFile(main); err != nil {
		return err
	}
	if err := s.ensurePid(main); err != nil {
		return err
	}
	return s.mirror()
}

// rewrite points src's includes (in any block: nginx allows include
// everywhere) and its top-level pid into the shadow, walking what the
// includes name.
func (s *nginxShadow) rewrite(src []byte) ([]byte, error) {
	var edits []textEdit
	for _, d := range nginxconf.Directives(nginxconf.Tokenize(src)) {
		if len(d.Args) != 2 || d.Args[1].Kind != nginxconf.Word {
			continue // not an include nginx would accept: it reports it
		}
		switch name, arg := d.Args[0].Val, d.Args[1]; {
		case name == "include":
			to, err := s.include(arg.Val)
			if err != nil {
				return nil, err
			}
			edits = append(edits, textEdit{arg.Start, arg.End, nginxconf.Quote(to)})
		case name == "pid" && d.Depth == 0:
			s.pid = true
			edits = append(edits, textEdit{arg.Start, arg.End, nginxconf.Quote(s.pidFile())})
		}
	}
	return applyEdits(src, edits), nil
}

// include walks what an include argument names and returns its shadow
// location. A relative one resolves against the conf prefix, as in nginx.
func (s *nginxShadow) include(arg string) (string, error) {
	p := arg
	if !filepath.IsAbs(p) {
		p = filepath.Join(s.confDir, p)
	}
	p = filepath.Clean(p)
	if !strings.ContainsAny(p, "*?[") { // what nginx takes for a glob
		return s.path(p), s.addFile(p)
	}
	// The glob's dir exists in the shadow even when nothing matches, so
	// the mirror cannot link it to the live dir.
	if err := os.MkdirAll(s.path(literalDir(p)), 0o755); err != nil {
		return "", err
	}
	// glob(3) negates a class with "[!", Go's Glob with "[^".
	gp := strings.ReplaceAll(p, "[!", "[^")
	for _, m := range s.globMatches(gp, func(m string) bool { return globVisible(p, m) }) {
		if err := s.addFile(m); err != nil {
			return "", err
		}
	}
	return s.path(p), nil
}

// globVisible applies glob(3)'s rule that Go's Glob lacks: a wildcard does
// not match a leading dot. It keeps the pipeline's hidden staged files
// (.default.conf.staged-123) out of "sites-enabled/*".
func globVisible(pattern, match string) bool {
	pc, mc := strings.Split(pattern, "/"), strings.Split(match, "/")
	for i := range min(len(pc), len(mc)) {
		if strings.HasPrefix(mc[i], ".") && !strings.HasPrefix(pc[i], ".") {
			return false
		}
	}
	return true
}

// literalDir is the longest leading dir of pattern without a glob
// character.
func literalDir(pattern string) string {
	dir := filepath.Dir(pattern)
	for strings.ContainsAny(dir, "*?[") {
		dir = filepath.Dir(dir)
	}
	return dir
}

// ensurePid gives nginx -t a pid file in the temp dir when no walked file
// sets one: -t creates the pid file, and the compiled-in one
// (/run/nginx.pid) belongs to the running nginx and is root's to create.
func (s *nginxShadow) ensurePid(main string) error {
	if s.pid {
		return nil
	}
	p := s.path(main)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil // no main config: nginx says so
	}
	// On the first line, so nginx's line numbers stay the real file's.
	return os.WriteFile(p, append([]byte("pid "+nginxconf.Quote(s.pidFile())+"; "), b...), 0o644)
}

// mirror links every entry of a live dir under the conf prefix that the
// shadow does not have into the shadow's copy of that dir.
func (s *nginxShadow) mirror() error {
	var dirs []string
	err := filepath.WalkDir(s.path(s.confDir), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return err
	})
	if err != nil {
		return err
	}
	for _, dir := range dirs {
		live := strings.TrimPrefix(dir, s.root)
		if live == "" {
			live = "/"
		}
		entries, err := os.ReadDir(live)
		if err != nil {
			continue // only the shadow has it: the dir of a new fragment
		}
		for _, e := range entries {
			dst := filepath.Join(dir, e.Name())
			if _, err := os.Lstat(dst); err == nil {
				continue
			}
			if err := os.Symlink(filepath.Join(live, e.Name()), dst); err != nil {
				return err
			}
		}
	}
	return nil
}
