package pipeline

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestResolveDest(t *testing.T) {
	root := realTempDir(t)
	conf, etc := filepath.Join(root, "conf"), filepath.Join(root, "etc")
	mkdir(t, conf)
	mkdir(t, etc)
	real := filepath.Join(conf, "real.conf")
	writeFile(t, real, "x", 0o644)
	symlink(t, "../conf/real.conf", filepath.Join(etc, "rel.conf"))
	symlink(t, real, filepath.Join(etc, "abs.conf"))
	symlink(t, "rel.conf", filepath.Join(etc, "chain.conf"))
	// ".." in a link inside a symlinked dir is taken from the real dir.
	mkdir(t, filepath.Join(root, "deep", "sub"))
	symlink(t, filepath.Join(root, "deep", "sub"), filepath.Join(root, "subdir"))
	writeFile(t, filepath.Join(root, "deep", "other.conf"), "x", 0o644)
	symlink(t, "../other.conf", filepath.Join(root, "deep", "sub", "up.conf"))
	symlink(t, "../conf/new.conf", filepath.Join(etc, "dangling.conf"))
	symlink(t, "new.conf", filepath.Join(etc, "dangling-chain.conf"))
	symlink(t, "dangling.conf", filepath.Join(etc, "new.conf"))
	symlink(t, "../nowhere/new.conf", filepath.Join(etc, "nodir.conf"))
	symlink(t, "loop2.conf", filepath.Join(etc, "loop1.conf"))
	symlink(t, "loop1.conf", filepath.Join(etc, "loop2.conf"))

	for _, c := range []struct{ dest, want, err string }{
		{real, real, ""},
		{filepath.Join(conf, "missing.conf"), filepath.Join(conf, "missing.conf"), ""},
		{filepath.Join(root, "nodir", "x.conf"), filepath.Join(root, "nodir", "x.conf"), ""},
		{filepath.Join(etc, "rel.conf"), real, ""},
		{filepath.Join(etc, "abs.conf"), real, ""},
		{filepath.Join(etc, "chain.conf"), real, ""},
		{filepath.Join(root, "subdir", "up.conf"), filepath.Join(root, "deep", "other.conf"), ""},
		{filepath.Join(etc, "dangling.conf"), filepath.Join(conf, "new.conf"), ""},
		{filepath.Join(etc, "dangling-chain.conf"), filepath.Join(conf, "new.conf"), ""},
		{filepath.Join(etc, "nodir.conf"), "", filepath.Join(root, "nowhere", "new.conf")},
		{filepath.Join(etc, "loop1.conf"), "", "too many"},
	} {
		got, err := resolveDest(c.dest)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), c.dest) {
				t.Errorf("%s: %q %v, want an error naming the dest and %q", c.dest, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %q %v, want %q", c.dest, got, err, c.want)
		}
	}
}

// symlinkedDest is etc/nginx.conf -> ../conf/real.conf holding "old\n".
func symlinkedDest(t *testing.T) (dest, real string) {
	root := realTempDir(t)
	mkdir(t, filepath.Join(root, "conf"))
	mkdir(t, filepath.Join(root, "etc"))
	real = filepath.Join(root, "conf", "real.conf")
	dest = filepath.Join(root, "etc", "nginx.conf")
	writeFile(t, real, "old\n", 0o644)
	symlink(t, "../conf/real.conf", dest)
	return dest, real
}

func isLink(t *testing.T, path, target string) {
	t.Helper()
	if got, err := os.Readlink(path); err != nil || got != target {
		t.Errorf("%s: link %q %v, want a symlink to %q", path, got, err, target)
	}
}

// A swap writes through a symlinked dest: the link stays, the target gets
// the bytes, and staging and generations live next to the target, where
// the first generation is a copy of the old bytes (not a link to a link).
func TestSwapWritesThroughRelativeSymlink(t *testing.T) {
	dest, real := symlinkedDest(t)
	if gen := stageSwap(t, dest, "new\n", 5, 0); gen != 2 {
		t.Errorf("generation %d, want 2 (1 = what was live)", gen)
	}
	isLink(t, dest, "../conf/real.conf")
	if got := readString(t, real); got != "new\n" {
		t.Errorf("target = %q, want new", got)
	}
	fi, err := os.Lstat(genPath(real, 1))
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("generation 1: %v %v, want a regular file", fi, err)
	}
	if got := readString(t, genPath(real, 1)); got != "old\n" {
		t.Errorf("generation 1 = %q, want old", got)
	}
	if _, err := os.Lstat(genDir(filepath.Clean(dest))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("generations next to the link: %v", err)
	}
	noStaged(t, filepath.Dir(dest))
	noStaged(t, filepath.Dir(real))
}

// Rollback through a relative symlink works and keeps the link (before,
// generation 1 was a hard link of the symlink, dangling in the
// generations dir).
func TestRestoreGenerationThroughRelativeSymlink(t *testing.T) {
	dest, _ := symlinkedDest(t)
	stageSwap(t, dest, "v1\n", 5, 0)
	if err := restoreGeneration(dest, 1, keepOwner); err != nil {
		t.Fatal(err)
	}
	isLink(t, dest, "../conf/real.conf")
	if got := readString(t, dest); got != "old\n" {
		t.Errorf("restored %q, want old", got)
	}
	if gens, _ := generations(dest); !slices.Equal(gens, []int{1}) {
		t.Errorf("generations %v, want [1]", gens)
	}
}

// A dangling symlink whose target dir exists: the first write creates the
// target and the link resolves from then on.
func TestSwapThroughDanglingSymlink(t *testing.T) {
	dest, real := symlinkedDest(t)
	if err := os.Remove(real); err != nil {
		t.Fatal(err)
	}
	if gen := stageSwap(t, dest, "new\n", 5, 0); gen != 1 {
		t.Errorf("generation %d, want 1", gen)
	}
	isLink(t, dest, "../conf/real.conf")
	if got := readString(t, dest); got != "new\n" {
		t.Errorf("live = %q", got)
	}
}

// A dangling symlink into a missing dir is an error naming both paths:
// we never create the dirs an operator's link points into.
func TestStageDanglingSymlinkMissingDir(t *testing.T) {
	root := realTempDir(t)
	dest := filepath.Join(root, "nginx.conf")
	symlink(t, "nowhere/real.conf", dest)
	_, _, err := stage(dest, []byte("x"), 0, keepOwner)
	target := filepath.Join(root, "nowhere", "real.conf")
	if err == nil || !strings.Contains(err.Error(), dest) || !strings.Contains(err.Error(), target) {
		t.Fatalf("err %v, want one naming %s and %s", err, dest, target)
	}
	if !errors.Is(err, syscall.ENOENT) {
		t.Errorf("err %v does not wrap ENOENT", err)
	}
	if _, err := os.Stat(filepath.Dir(target)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target dir created: %v", err)
	}
}

// Leftovers of a killed render sit next to the target; sweep finds them
// through the link.
func TestSweepThroughSymlink(t *testing.T) {
	dest, real := symlinkedDest(t)
	left := filepath.Join(filepath.Dir(real), ".real.conf.staged-123")
	writeFile(t, left, "x", 0o600)
	sweepStaged(slog.New(slog.DiscardHandler), dest)
	if _, err := os.Lstat(left); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover next to the target not swept: %v", err)
	}
	isLink(t, dest, "../conf/real.conf")
}

// The link repointed between stage and swap: the swap refuses rather than
// moving the staged file into another dir; both targets are untouched.
func TestSwapRefusesRepointedSymlink(t *testing.T) {
	dest, real := symlinkedDest(t)
	other := filepath.Join(filepath.Dir(filepath.Dir(real)), "other.conf")
	writeFile(t, other, "other\n", 0o644)
	staged, release, err := stage(dest, []byte("new\n"), 0, keepOwner)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	defer os.Remove(staged)
	if err := os.Remove(dest); err != nil {
		t.Fatal(err)
	}
	symlink(t, "../other.conf", dest)
	if _, err := swap(dest, 5, staged, true, 0); err == nil || !strings.HasPrefix(err.Error(), "swap "+dest) {
		t.Fatalf("swap after repointing: %v, want an error", err)
	}
	if readString(t, real) != "old\n" || readString(t, other) != "other\n" {
		t.Error("a target changed")
	}
}
