package proxy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// ValidateSet runs haproxy -c on the configuration HAProxy loads (Files,
// in order), with each staged file of replace passed in place of the live
// file it stands for. A key of replace is a live path: one of Files, or a
// file in a directory of Files (a new one counts once its name is one
// HAProxy loads from there). Every key must be loaded, or the set is
// rejected with ErrNotLoaded. HAProxy's messages name the staged files;
// Output and Path name the live ones instead.
//
// Staged files sit next to the live ones (the pipeline stages them so),
// which keeps relative paths under "default-path config" resolving alike.
func (h *HAProxy) ValidateSet(ctx context.Context, replace map[string]string) error {
	replace, err := normalizeSet(replace)
	if err != nil {
		return err
	}
	files, used, err := h.setFiles(replace)
	if err != nil {
		return err
	}
	if err := notLoaded("haproxy", replace, used, "-f "+strings.Join(h.files(), " -f ")); err != nil {
		return err
	}
	// No -q: HAProxy 2.6 then prints nothing at all, its alerts included,
	// and the alerts are the only explanation an operator gets.
	args := []string{"-c"}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	out, err := run(ctx, h.timeout(), h.Bin, args...)
	if err != nil {
		unmap := map[string]string{}
		for live, staged := range replace {
			unmap[staged] = live
		}
		o := unstage(string(out), unmap)
		return &ValidationError{Proxy: "haproxy", Path: culprit(o, identity(replace), files[0]), Output: o, Err: err}
	}
	return nil
}

// files is every -f of the running configuration: Files, or Config alone.
func (h *HAProxy) files() []string {
	if len(h.Files) > 0 {
		return h.Files
	}
	return []string{h.Config}
}

// setFiles expands the -f list into the files HAProxy reads, in its order,
// each replaced one by its staged file. A directory is expanded here, not
// passed on, so a staged file can stand in for one of its files.
func (h *HAProxy) setFiles(replace map[string]string) (files []string, used map[string]bool, err error) {
	staging := map[string]bool{}
	for _, staged := range replace {
		staging[staged] = true
	}
	used = map[string]bool{}
	for _, f := range h.files() {
		if f == "" {
			return nil, nil, errors.New("haproxy: no configuration file (-f) to validate in")
		}
		if f, err = filepath.Abs(f); err != nil {
			return nil, nil, err
		}
		names := []string{f}
		if fi, err := os.Stat(f); err == nil && fi.IsDir() {
			names = haproxyDir(f, replace, staging)
		}
		for _, name := range names {
			if staged, ok := replace[name]; ok {
				used[name] = true
				name = staged
			}
			files = append(files, name)
		}
	}
	return files, used, nil
}

// haproxyDir lists what HAProxy loads from a -f directory: its regular
// files named *.cfg and not hidden, in byte order (LC_COLLATE=C), plus the
// keys of replace that will be such files once they exist.
func haproxyDir(dir string, replace map[string]string, staging map[string]bool) []string {
	loads := func(p string) bool {
		name := filepath.Base(p)
		return filepath.Dir(p) == dir && strings.HasSuffix(name, ".cfg") && !strings.HasPrefix(name, ".") && !staging[p]
	}
	var out []string
	entries, _ := os.ReadDir(dir) // unreadable: haproxy reports it when it loads the live dir
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && loads(p) {
			out = append(out, p)
		}
	}
	for live := range replace {
		if loads(live) && !slices.Contains(out, live) {
			out = append(out, live)
		}
	}
	sort.Strings(out)
	return out
}
