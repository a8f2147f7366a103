package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// stage writes contents to a temp file in dest's dir (same filesystem, so
// the later rename is atomic), fsyncs it and gives it the live file's mode.
func stage(dest string, contents []byte, perms os.FileMode) (string, error) {
	dir, base := filepath.Split(dest)
	f, err := os.CreateTemp(dir, "."+base+".staged-*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(name)
		return "", err
	}
	if _, err := f.Write(contents); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if perms == 0 {
		perms = 0o644
		if fi, err := os.Stat(dest); err == nil {
			perms = fi.Mode().Perm()
		}
	}
	if err := f.Chmod(perms); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// genDir holds the good generations of dest, newest = highest number.
func genDir(dest string) string {
	dir, base := filepath.Split(dest)
	return filepath.Join(dir, "."+base+".generations")
}

func generations(dest string) ([]int, error) {
	ents, err := os.ReadDir(genDir(dest))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out, nil
}

func genPath(dest string, n int) string {
	return filepath.Join(genDir(dest), fmt.Sprintf("%08d", n))
}

// swap makes staged the live file: record it as the newest generation (a
// hard link, no copy), rename it over dest, fsync the dir so the rename
// survives a crash, then prune old generations. A kill -9 at any point
// leaves either the old or the new complete file live.
func (p *Pipeline) swap(t *Target, staged string, liveExists bool) error {
	dest := filepath.Clean(t.Dest)
	if err := os.MkdirAll(genDir(dest), 0o755); err != nil {
		return err
	}
	gens, err := generations(dest)
	if err != nil {
		return err
	}
	next := 1
	if len(gens) > 0 {
		next = gens[len(gens)-1] + 1
	} else if liveExists {
		// Keep what was live before our first swap: it served, so it is
		// the best rollback target we have.
		if err := os.Link(dest, genPath(dest, next)); err != nil {
			return fmt.Errorf("keep previous generation: %w", err)
		}
		next++
	}
	if err := os.Link(staged, genPath(dest, next)); err != nil {
		return fmt.Errorf("record generation: %w", err)
	}
	if err := os.Rename(staged, dest); err != nil {
		os.Remove(genPath(dest, next))
		return err
	}
	if err := syncDir(filepath.Dir(dest)); err != nil {
		return err
	}
	_ = syncDir(genDir(dest))
	return prune(dest, t.Keep)
}

func prune(dest string, keep int) error {
	gens, err := generations(dest)
	if err != nil {
		return err
	}
	for len(gens) > keep {
		if err := os.Remove(genPath(dest, gens[0])); err != nil {
			return err
		}
		gens = gens[1:]
	}
	return nil
}

// restorePrevious drops the newest generation (the one that failed) and
// makes the one before it live again. It reports false when there is no
// earlier generation to go back to.
func restorePrevious(t *Target) (bool, error) {
	dest := filepath.Clean(t.Dest)
	gens, err := generations(dest)
	if err != nil {
		return false, err
	}
	if len(gens) < 2 {
		return false, nil
	}
	prev, err := os.ReadFile(genPath(dest, gens[len(gens)-2]))
	if err != nil {
		return false, err
	}
	staged, err := stage(dest, prev, 0)
	if err != nil {
		return false, err
	}
	defer os.Remove(staged)
	if err := os.Rename(staged, dest); err != nil {
		return false, err
	}
	if err := syncDir(filepath.Dir(dest)); err != nil {
		return false, err
	}
	return true, os.Remove(genPath(dest, gens[len(gens)-1]))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !strings.Contains(err.Error(), "invalid argument") {
		return err
	}
	return nil
}
