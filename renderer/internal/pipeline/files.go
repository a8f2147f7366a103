package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// stagedPrefix is how staged files of dest begin; os.CreateTemp appends
// decimal digits. sweep relies on both.
func stagedPrefix(dest string) string {
	return "." + filepath.Base(dest) + ".staged-"
}

// stage writes contents to a temp file in dest's dir (same filesystem, so
// the later rename is atomic), fsyncs it and gives it the live file's mode.
//
// The file stays open with an exclusive flock until release: the lock is
// what tells sweep (in this or another renderer process, e.g. `renderer
// once` next to the daemon) that the file is in flight, and the kernel
// drops it when a kill -9 ends the owner, which is exactly when a staged
// file becomes garbage.
func stage(dest string, contents []byte, perms os.FileMode) (name string, release func(), err error) {
	dir := filepath.Dir(dest)
	f, err := os.CreateTemp(dir, stagedPrefix(dest)+"*")
	if err != nil {
		return "", nil, err
	}
	name = f.Name()
	fail := func(err error) (string, func(), error) {
		f.Close()
		os.Remove(name)
		return "", nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fail(fmt.Errorf("lock staged file: %w", err))
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
	// Sync above already reported write-back errors; closing only drops
	// the lock.
	return name, func() { f.Close() }, nil
}

// sweep removes the staged files of dest that a killed renderer left
// behind: only names of our own pattern for this destination (prefix plus
// CreateTemp's digits), only regular files, and only when nobody holds the
// staging lock. A leftover that is also the newest generation (killed
// after recording it, before the rename) was never live: that generation
// goes too, so a rollback never restores a config that never served.
func (p *Pipeline) sweep(dest string) {
	ents, err := os.ReadDir(filepath.Dir(dest))
	if err != nil {
		return // no dir yet: nothing to sweep
	}
	prefix := stagedPrefix(dest)
	var newest os.FileInfo
	if gens, err := generations(dest); err == nil && len(gens) > 0 {
		newest, _ = os.Lstat(genPath(dest, gens[len(gens)-1]))
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || rest == "" || strings.Trim(rest, "0123456789") != "" || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(filepath.Dir(dest), e.Name())
		f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			continue
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close() // in flight in a live process
			continue
		}
		fi, _ := f.Stat()
		if newest != nil && fi != nil && os.SameFile(fi, newest) {
			if err := os.Remove(genPath(dest, generationOf(newest))); err == nil {
				p.log.Warn("removed a generation that was recorded but never made live", "dest", dest, "generation", newest.Name())
				newest = nil
			}
		}
		err = os.Remove(path)
		f.Close()
		if err == nil {
			p.log.Info("removed a staged file left by an interrupted render", "dest", dest, "file", e.Name())
		}
	}
}

func generationOf(fi os.FileInfo) int {
	n, _ := strconv.Atoi(fi.Name())
	return n
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
// survives a crash. A kill -9 at any point leaves either the old or the
// new complete file live.
//
// Old generations are pruned before the new one is recorded, so there are
// never more than Keep, even for a moment or after a kill. A kill between
// recording and the rename leaves a generation that was never live, next
// to its staged file (same inode); sweep removes both at the next start.
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
	if err := prune(dest, t.Keep-1); err != nil {
		return err
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
	return nil
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
	staged, release, err := stage(dest, prev, 0)
	if err != nil {
		return false, err
	}
	defer release()
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
