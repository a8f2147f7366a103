package pipeline

import (
	"os"
	"path/filepath"
	"testing"
)

const nobody = 65534

// A swap keeps the owner, group and mode of a live file another user owns,
// in the live file and in the kept generations (consul-template does the
// same; before, the renderer made the file root-owned).
func TestSwapKeepsLiveOwnerAndMode(t *testing.T) {
	needRoot(t)
	dest := filepath.Join(t.TempDir(), "haproxy.cfg")
	writeFile(t, dest, "old\n", 0o640)
	if err := os.Chown(dest, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	gen := stageSwap(t, dest, "new\n", 5, 0)
	if got := readString(t, dest); got != "new\n" {
		t.Fatalf("live = %q", got)
	}
	for _, p := range []string{dest, genPath(dest, gen), genPath(dest, 1)} {
		if uid, gid, mode := attrs(t, p); uid != nobody || gid != nobody || mode != 0o640 {
			t.Errorf("%s: %d:%d %o, want %d:%d 640", p, uid, gid, mode, nobody, nobody)
		}
	}
}

// An explicit owner (the HCL template stanza's user/group) wins over the
// live file's; -1 keeps the live file's; explicit perms win over its mode.
func TestStageExplicitOwner(t *testing.T) {
	needRoot(t)
	for _, c := range []struct {
		name      string
		live      bool
		own       Owner
		perms     os.FileMode
		uid, gid  int
		wantPerms os.FileMode
	}{
		{"user only", true, NewOwner(nobody, -1), 0, nobody, 0, 0o600},
		{"group only", true, NewOwner(-1, nobody), 0, 0, nobody, 0o600},
		{"both, explicit perms", true, NewOwner(nobody, nobody), 0o644, nobody, nobody, 0o644},
		{"keep", true, keepOwner, 0, 0, 0, 0o600},
		{"no live file", false, NewOwner(nobody, nobody), 0, nobody, nobody, 0o644},
	} {
		t.Run(c.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "nginx.conf")
			if c.live {
				writeFile(t, dest, "old\n", 0o600) // root:root
			}
			staged, release, err := stage(dest, []byte("new\n"), c.perms, c.own)
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			if uid, gid, mode := attrs(t, staged); uid != c.uid || gid != c.gid || mode != c.wantPerms {
				t.Errorf("staged %d:%d %o, want %d:%d %o", uid, gid, mode, c.uid, c.gid, c.wantPerms)
			}
		})
	}
}

// A rollback keeps the live file's owner and mode too, and an explicit
// owner applies to the restored file.
func TestRestoreGenerationKeepsLiveOwner(t *testing.T) {
	needRoot(t)
	dest := filepath.Join(t.TempDir(), "nginx.conf")
	writeFile(t, dest, "v0\n", 0o640)
	if err := os.Chown(dest, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	g1 := stageSwap(t, dest, "v1\n", 5, 0)
	stageSwap(t, dest, "v2\n", 5, 0)
	if err := restoreGeneration(dest, g1, keepOwner); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, dest); got != "v1\n" {
		t.Fatalf("live = %q, want v1", got)
	}
	if uid, gid, mode := attrs(t, dest); uid != nobody || gid != nobody || mode != 0o640 {
		t.Errorf("restored %d:%d %o, want %d:%d 640", uid, gid, mode, nobody, nobody)
	}
	if err := restoreGeneration(dest, 1, NewOwner(0, -1)); err != nil {
		t.Fatal(err)
	}
	if uid, gid, _ := attrs(t, dest); uid != 0 || gid != nobody {
		t.Errorf("restored with explicit uid 0: %d:%d, want 0:%d", uid, gid, nobody)
	}
}
