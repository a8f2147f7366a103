package pipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// Every write error names the operation and the dest and wraps the errno,
// so callers can report errors.Is(err, syscall.ENOSPC) and friends.
func TestWriteErrorsNameOperationAndPath(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	writeFile(t, notDir, "x", 0o644)
	dest := filepath.Join(notDir, "nginx.conf") // its "dir" is a file
	_, _, err := stage(dest, []byte("x"), 0, keepOwner)
	wantErr(t, err, "stage", dest, syscall.ENOTDIR)

	dest = filepath.Join(dir, "nginx.conf")
	_, err = swap(dest, 5, filepath.Join(dir, ".nginx.conf.staged-1"), false, 0)
	wantErr(t, err, "swap", dest, syscall.ENOENT)

	err = restoreGeneration(dest, 1, keepOwner)
	wantErr(t, err, "restore", dest, syscall.ENOENT)
}

func wantErr(t *testing.T, err error, op, dest string, errno syscall.Errno) {
	t.Helper()
	if err == nil || !strings.HasPrefix(err.Error(), op+" "+dest) || !errors.Is(err, errno) {
		t.Errorf("%s: err %v, want one starting %q wrapping %v", op, err, op+" "+dest, errno)
	}
}

// tmpfs mounts a small tmpfs on a temp dir for the test, or skips when
// this process may not mount (not root, or no CAP_SYS_ADMIN in a
// container): the only way to get a real ENOSPC / EROFS from the kernel.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	testenv.Need(t, os.Geteuid() == 0, fmt.Sprintf("root, to mount a tmpfs (euid %d)", os.Geteuid()))
	err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size)
	testenv.Need(t, err == nil, fmt.Sprintf("permission to mount a tmpfs: %v", err))
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes to path until the filesystem is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); errors.Is(err, syscall.ENOSPC) {
			return
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// A full disk fails stage and swap with an error wrapping ENOSPC; the live
// file and its generations stay as they were and nothing is left behind.
func TestWriteErrorsENOSPC(t *testing.T) {
	dir := tmpfs(t, "64k")
	dest := filepath.Join(dir, "nginx.conf")
	writeFile(t, dest, "old\n", 0o644)
	filler := filepath.Join(dir, "filler")
	fill(t, filler)

	_, _, err := stage(dest, []byte(strings.Repeat("x", 16<<10)), 0, keepOwner)
	wantErr(t, err, "stage", dest, syscall.ENOSPC)
	if got := readString(t, dest); got != "old\n" {
		t.Errorf("live = %q after a failed stage", got)
	}
	noStaged(t, dir)

	// Room for the staged file only: the first swap's copy of what was
	// live does not fit.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	staged, release, err := stage(dest, []byte("new\n"), 0, keepOwner)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	fill(t, filler)
	_, err = swap(dest, 5, staged, true, 0)
	wantErr(t, err, "swap", dest, syscall.ENOSPC)
	if got := readString(t, dest); got != "old\n" {
		t.Errorf("live = %q after a failed swap", got)
	}
	if gens, _ := generations(dest); len(gens) != 0 {
		t.Errorf("generations %v recorded by a failed swap", gens)
	}
}

// A read-only filesystem fails stage, swap and restore with an error
// wrapping EROFS; the live file stays.
func TestWriteErrorsEROFS(t *testing.T) {
	dir := tmpfs(t, "1m")
	dest := filepath.Join(dir, "nginx.conf")
	writeFile(t, dest, "v0\n", 0o644)
	stageSwap(t, dest, "v1\n", 5, 0)
	staged, release, err := stage(dest, []byte("v2\n"), 0, keepOwner)
	if err != nil {
		t.Fatal(err)
	}
	release() // a file open for writing keeps a remount ro busy
	remount(t, dir, syscall.MS_RDONLY)
	defer remount(t, dir, 0)

	_, _, err = stage(dest, []byte("v3\n"), 0, keepOwner)
	wantErr(t, err, "stage", dest, syscall.EROFS)
	_, err = swap(dest, 5, staged, true, 0)
	wantErr(t, err, "swap", dest, syscall.EROFS)
	err = restoreGeneration(dest, 1, keepOwner)
	wantErr(t, err, "restore", dest, syscall.EROFS)
	if got := readString(t, dest); got != "v1\n" {
		t.Errorf("live = %q, want v1", got)
	}
}

func remount(t *testing.T, dir string, flags uintptr) {
	t.Helper()
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|flags, ""); err != nil {
		t.Fatal(fmt.Errorf("remount %s: %w", dir, err))
	}
}
