package pipeline

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Helpers for the files_*_test.go tests. They use only files.go, so these
// tests do not depend on the Pipeline type.

func writeFile(t *testing.T, path, s string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // umask
		t.Fatal(err)
	}
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// attrs is the owner, group and permission bits of path (following links).
func attrs(t *testing.T, path string) (uid, gid int, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid), fi.Mode().Perm()
}

// needRoot: chown to another user needs root; the suite runs as root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test chowns files to uid 65534 and must run as root (euid %d)", os.Geteuid())
	}
}

// render stages s for dest (keeping the live owner) and swaps it in the
// way the pipeline does, returning the recorded generation.
func stageSwap(t *testing.T, dest, s string, keep, protect int) int {
	t.Helper()
	_, err := os.Stat(dest)
	live := err == nil
	staged, release, err := stage(dest, []byte(s), 0, keepOwner)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	defer os.Remove(staged)
	gen, err := swap(dest, keep, staged, live, protect)
	if err != nil {
		t.Fatal(err)
	}
	return gen
}

// noStaged fails when a staged file is left in dir.
func noStaged(t *testing.T, dir string) {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(dir, ".*.staged-*"))
	if len(left) != 0 {
		t.Errorf("staged files left in %s: %v", dir, left)
	}
}

// realTempDir is t.TempDir with its symlinks resolved, so paths compare
// equal to what resolveDest returns.
func realTempDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}
