package pipeline

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Owner is who a written file belongs to. -1 in a field keeps what the live
// file has (with no live file yet: the renderer's own id), as chown(2)
// reads -1. The zero value keeps both, so a Target that says nothing
// about ownership never hands the live file to root.
type Owner struct{ uid, gid int } // id+1; 0 keeps

// NewOwner returns the owner uid:gid; -1 in either keeps the live file's.
func NewOwner(uid, gid int) Owner { return Owner{uid + 1, gid + 1} }

// ids returns uid and gid, -1 for "keep".
func (o Owner) ids() (int, int) { return o.uid - 1, o.gid - 1 }

// keepOwner keeps the live file's owner and group.
var keepOwner = Owner{}

// maxHops bounds a chain of symlinks we follow by hand, as the kernel's
// ELOOP limit does.
const maxHops = 40

// resolveDest is the file a write to dest really changes. We write through
// symlinks: an operator who points nginx.conf at a file elsewhere (a config
// checkout, a shared volume) keeps the link, and the staged file, the
// generations and the rename all live next to the final target, where the
// rename is atomic and a relative link target still resolves. Callers
// resolve at every write because the link may be repointed at any time.
//
// A dest that does not exist yet is returned as is (the first render
// creates it); a dangling symlink resolves to its target path when the
// target's directory exists.
func resolveDest(dest string) (string, error) {
	dest = filepath.Clean(dest)
	real, err := filepath.EvalSymlinks(dest)
	if err == nil {
		return real, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("resolve %s: %w", dest, err)
	}
	p := dest
	for hop := range maxHops {
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) && hop == 0 {
			return dest, nil
		}
		if errors.Is(err, fs.ErrNotExist) {
			return danglingTarget(dest, p)
		}
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", dest, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			return p, nil // created meanwhile
		}
		link, err := os.Readlink(p)
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", dest, err)
		}
		if !filepath.IsAbs(link) {
			// Resolve the link's own dir first: ".." in the target is
			// taken from the real dir, as the kernel does, not lexically.
			dir, err := filepath.EvalSymlinks(filepath.Dir(p))
			if err != nil {
				return "", fmt.Errorf("resolve %s: %w", dest, err)
			}
			link = filepath.Join(dir, link)
		}
		p = filepath.Clean(link)
	}
	return "", fmt.Errorf("resolve %s: %w", dest, syscall.ELOOP)
}

// danglingTarget is where a write through the dangling symlink dest goes:
// its final target, created in a directory that must already exist (we
// create the dirs of a plain dest, never those an operator's link names).
func danglingTarget(dest, target string) (string, error) {
	dir, err := filepath.EvalSymlinks(filepath.Dir(target))
	if err == nil {
		var fi os.FileInfo
		if fi, err = os.Stat(dir); err == nil && !fi.IsDir() {
			err = syscall.ENOTDIR
		}
	}
	if err != nil {
		return "", fmt.Errorf("dest %s is a symlink to %s, whose directory is missing: %w", dest, target, err)
	}
	return filepath.Join(dir, filepath.Base(target)), nil
}

// stagedPrefix is how staged files of dest begin; os.CreateTemp appends
// decimal digits. sweep relies on both.
func stagedPrefix(dest string) string {
	return "." + filepath.Base(dest) + ".staged-"
}

// stage writes contents to a temp file next to the file dest resolves to
// (same filesystem, so the later rename is atomic), gives it its mode and
// owner (setAttrs) and fsyncs it. It returns the staged file's path.
//
// The file stays open with an exclusive flock until release: the lock is
// what tells sweep (in this or another renderer process, e.g. `renderer
// once` next to the daemon) that the file is in flight, and the kernel
// drops it when a kill -9 ends the owner, which is exactly when a staged
// file becomes garbage.
func stage(dest string, contents []byte, perms os.FileMode, own Owner) (name string, release func(), err error) {
	real, err := resolveDest(dest)
	if err != nil {
		return "", nil, fmt.Errorf("stage %s: %w", dest, err)
	}
	f, err := os.CreateTemp(filepath.Dir(real), stagedPrefix(real)+"*")
	if err != nil {
		return "", nil, fmt.Errorf("stage %s: %w", dest, err)
	}
	name = f.Name()
	fail := func(err error) (string, func(), error) {
		f.Close()
		os.Remove(name)
		return "", nil, fmt.Errorf("stage %s: %w", dest, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fail(fmt.Errorf("lock %s: %w", name, err))
	}
	if _, err := f.Write(contents); err != nil {
		return fail(err)
	}
	// Attributes before the fsync, so a crash after the rename cannot
	// leave the new bytes live with the temp file's 0600 and our ids.
	if err := setAttrs(f, real, perms, own); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	// Sync above already reported write-back errors; closing only drops
	// the lock.
	return name, func() { f.Close() }, nil
}

// setAttrs gives the staged file the mode, owner and group the live file
// has, unless perms (non-zero) or own (>= 0) name them: a swap must not
// turn a file another user owns into a root-owned one (consul-template
// keeps them too). With no live file: perms or 0644, own or our own ids.
func setAttrs(f *os.File, live string, perms os.FileMode, own Owner) error {
	mode := os.FileMode(0o644)
	uid, gid := own.ids()
	fi, err := os.Stat(live)
	switch {
	case err == nil:
		mode = fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = pick(uid, int(st.Uid)), pick(gid, int(st.Gid))
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if perms != 0 {
		mode = perms
	}
	// Chown first: it clears setuid/setgid bits, which chmod then sets.
	if err := chown(f, uid, gid); err != nil {
		return err
	}
	return f.Chmod(mode)
}

// pick is want unless it is -1 (keep).
func pick(want, live int) int {
	if want < 0 {
		return live
	}
	return want
}

// chown changes only what differs, so a renderer that is not root still
// writes files it already owns (fchown to another id needs privilege).
func chown(f *os.File, uid, gid int) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid == int(st.Uid) {
		uid = -1
	}
	if gid == int(st.Gid) {
		gid = -1
	}
	if uid < 0 && gid < 0 {
		return nil
	}
	if err := f.Chown(uid, gid); err != nil {
		return fmt.Errorf("owner %d:%d: %w", uid, gid, err)
	}
	return nil
}

// sweep removes the staged files of dest that a killed renderer left
// behind (sweepStaged).
func (p *Pipeline) sweep(dest string) { sweepStaged(p.log, dest) }

// sweepStaged removes the staged files of dest that a killed renderer left
// behind: only names of our own pattern for this destination (prefix plus
// CreateTemp's digits), only regular files, and only when nobody holds the
// staging lock. A leftover that is also the newest generation (killed
// after recording it, before the rename) was never live: that generation
// goes too, so a rollback never restores a config that never served.
func sweepStaged(log *slog.Logger, dest string) {
	real, err := resolveDest(dest)
	if err != nil {
		log.Warn("cannot sweep staged leftovers", "dest", dest, "err", err)
		return
	}
	dir := filepath.Dir(real)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return // no dir yet: nothing to sweep
	}
	prefix := stagedPrefix(real)
	var newest os.FileInfo
	if gen, ok, err := latestGeneration(real); err == nil && ok {
		newest, _ = os.Lstat(genPath(real, gen))
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || !isDigits(rest) || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, e.Name())
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
			if err := os.Remove(genPath(real, generationOf(newest))); err == nil {
				log.Warn("removed a generation that was recorded but never made live", "dest", dest, "generation", newest.Name())
				newest = nil
			}
		}
		err = os.Remove(path)
		f.Close()
		if err == nil {
			log.Info("removed a staged file left by an interrupted render", "dest", dest, "file", path)
		}
	}
}

// isDigits: CreateTemp's random part, and generation names, are decimal
// digits only (strconv.Atoi alone would take "+1" or "-1").
func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

func generationOf(fi os.FileInfo) int {
	n, _ := strconv.Atoi(fi.Name())
	return n
}

// genDir holds the generations of the resolved dest (resolveDest), next
// to it, newest = highest number. genDir and genPath take a resolved path:
// with a symlinked dest, dest's own dir is the wrong one.
func genDir(real string) string {
	dir, base := filepath.Split(real)
	return filepath.Join(dir, "."+base+".generations")
}

func genPath(real string, n int) string {
	return filepath.Join(genDir(real), fmt.Sprintf("%08d", n))
}

// generations lists the generation numbers of dest, oldest first.
func generations(dest string) ([]int, error) {
	real, err := resolveDest(dest)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(genDir(real))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		if !isDigits(e.Name()) {
			continue
		}
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out, nil
}

// readGeneration returns the bytes of generation gen of dest (resolved:
// generations live next to a symlink's target).
func readGeneration(dest string, gen int) ([]byte, error) {
	real, err := resolveDest(dest)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(genPath(real, gen))
}

// latestGeneration is the newest generation of dest; false when there is
// none.
func latestGeneration(dest string) (int, bool, error) {
	gens, err := generations(dest)
	if err != nil || len(gens) == 0 {
		return 0, false, err
	}
	return gens[len(gens)-1], true, nil
}

// swap makes staged (from stage) the live file and returns the generation
// it recorded: record staged as the newest generation (a hard link, no
// copy), rename it over the file dest resolves to, fsync the dir so the
// rename survives a crash. A kill -9 at any point leaves either the old or
// the new complete file live. After the rename, gen is returned even with
// an error (a failed dir fsync): the new file is live then.
//
// Old generations are pruned before the new one is recorded, so there are
// never more than keep, even for a moment or after a kill; protect (the
// last verified generation, 0 = none) is never pruned, so several
// unverified swaps in a row cannot push it out. A kill between recording
// and the rename leaves a generation that was never live, next to its
// staged file (same inode); sweep removes both at the next start.
func swap(dest string, keep int, staged string, liveExists bool, protect int) (gen int, err error) {
	fail := func(err error) (int, error) {
		return 0, fmt.Errorf("swap %s: %w", dest, err)
	}
	real, err := resolveDest(dest)
	if err != nil {
		return fail(err)
	}
	if filepath.Dir(staged) != filepath.Dir(real) {
		// The symlink was repointed after stage: the rename would move
		// the file elsewhere, or fail across filesystems.
		return fail(fmt.Errorf("staged %s is not next to %s: the symlink changed during the render", staged, real))
	}
	if err := os.MkdirAll(genDir(real), 0o755); err != nil {
		return fail(err)
	}
	gens, err := generations(real)
	if err != nil {
		return fail(err)
	}
	next := 1
	if len(gens) > 0 {
		next = gens[len(gens)-1] + 1
	} else if liveExists {
		kept, err := keepLive(real)
		if err != nil {
			return fail(fmt.Errorf("keep previous generation: %w", err))
		}
		if kept {
			next++
		}
	}
	if err := prune(real, keep-1, protect); err != nil {
		return fail(err)
	}
	if err := os.Link(staged, genPath(real, next)); err != nil {
		return fail(fmt.Errorf("record generation: %w", err))
	}
	if err := os.Rename(staged, real); err != nil {
		os.Remove(genPath(real, next))
		return fail(err)
	}
	if err := syncDir(filepath.Dir(real)); err != nil {
		return next, fmt.Errorf("swap %s: %w", dest, err)
	}
	_ = syncDir(genDir(real)) // generations are best effort; the live file is not
	return next, nil
}

// keepLive records what was live before our first swap as generation 1:
// it served, so it is the best rollback target we have. A copy of the
// bytes, never a link: the live file may have other hard links an operator
// edits in place, and a symlink's relative target would not resolve from
// the generations dir. It reports false when the file is gone.
func keepLive(real string) (bool, error) {
	b, err := os.ReadFile(real)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	staged, release, err := stage(real, b, 0, keepOwner)
	if err != nil {
		return false, err
	}
	defer release()
	if err := os.Rename(staged, genPath(real, 1)); err != nil {
		os.Remove(staged)
		return false, err
	}
	return true, nil
}

// prune removes the oldest generations of dest until at most keep are
// left, skipping protect (0 = none): the last verified generation stays
// even if that leaves keep+1.
func prune(dest string, keep int, protect int) error {
	real, err := resolveDest(dest)
	if err != nil {
		return fmt.Errorf("prune %s: %w", dest, err)
	}
	gens, err := generations(real)
	if err != nil {
		return fmt.Errorf("prune %s: %w", dest, err)
	}
	excess := len(gens) - max(keep, 0)
	for _, g := range gens {
		if excess <= 0 {
			break
		}
		if g == protect {
			continue
		}
		if err := os.Remove(genPath(real, g)); err != nil {
			return fmt.Errorf("prune %s: %w", dest, err)
		}
		excess--
	}
	return nil
}

// restoreGeneration makes generation gen of dest live again and removes
// every newer generation: they were swapped in after gen and failed or
// were never loaded, so no later rollback may pick them. The bytes are
// staged afresh, not the generation's inode renamed in, so gen stays
// recorded and the file keeps the live file's mode and owner (or own's).
func restoreGeneration(dest string, gen int, own Owner) error {
	fail := func(err error) error {
		return fmt.Errorf("restore %s to generation %d: %w", dest, gen, err)
	}
	real, err := resolveDest(dest)
	if err != nil {
		return fail(err)
	}
	path := genPath(real, gen)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fail(fmt.Errorf("no such generation in %s: %w", genDir(real), err))
	}
	if err != nil {
		return fail(err)
	}
	perms, own, err := restoreAttrs(real, path, own)
	if err != nil {
		return fail(err)
	}
	staged, release, err := stage(real, b, perms, own)
	if err != nil {
		return fail(err)
	}
	defer release()
	defer os.Remove(staged) // no-op after the rename; runs before release
	if err := os.Rename(staged, real); err != nil {
		return fail(err)
	}
	if err := syncDir(filepath.Dir(real)); err != nil {
		return fail(err)
	}
	return dropNewer(real, gen)
}

// restoreAttrs: the live file's mode and owner win (stage reads them);
// when the live file is gone, the generation's are the best we know.
func restoreAttrs(real, genFile string, own Owner) (os.FileMode, Owner, error) {
	if _, err := os.Stat(real); !errors.Is(err, fs.ErrNotExist) {
		return 0, own, nil
	}
	fi, err := os.Stat(genFile)
	if err != nil {
		return 0, own, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		uid, gid := own.ids()
		own = NewOwner(pick(uid, int(st.Uid)), pick(gid, int(st.Gid)))
	}
	return fi.Mode().Perm(), own, nil
}

// dropNewer removes the generations of real newer than gen.
func dropNewer(real string, gen int) error {
	gens, err := generations(real)
	if err != nil {
		return fmt.Errorf("restore %s: %w", real, err)
	}
	for _, g := range gens {
		if g > gen {
			if err := os.Remove(genPath(real, g)); err != nil {
				return fmt.Errorf("restore %s: drop newer generation: %w", real, err)
			}
		}
	}
	_ = syncDir(genDir(real))
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	// Some filesystems cannot fsync a directory; the rename is as
	// durable as they make it.
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}
