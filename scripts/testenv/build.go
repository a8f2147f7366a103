package testenv

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// ModuleRoot returns the directory holding the repository's go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the switchyard module")
	}
	return filepath.Dir(mod), nil
}

var binaries struct {
	mu    sync.Mutex
	dir   string
	built map[string]string
}

// BuildBinary builds a main package of this module (once per test process;
// Go's build cache makes it cheap) with the race detector when the test
// itself runs under it, and returns the binary's path.
func BuildBinary(t testing.TB, pkg string) string {
	t.Helper()
	p, err := Build(pkg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Build is BuildBinary for callers without a testing.TB (benchmarks).
func Build(pkg string) (string, error) {
	binaries.mu.Lock()
	defer binaries.mu.Unlock()
	if p, ok := binaries.built[pkg]; ok {
		return p, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	if binaries.built == nil {
		// One fixed folder per checkout, not a temp dir per process: nothing
		// piles up in /tmp across runs, and two checkouts tested at once
		// never run each other's binaries. Each build lands under a unique
		// name and is renamed into place, so parallel test packages never
		// see half a file.
		sum := sha256.Sum256([]byte(root))
		binaries.dir = filepath.Join(os.TempDir(), fmt.Sprintf("switchyard-bin-%d-%x", os.Getuid(), sum[:4]))
		if err := os.MkdirAll(binaries.dir, 0o755); err != nil {
			return "", err
		}
		binaries.built = map[string]string{}
	}
	name := path.Base(pkg)
	args := []string{"build"}
	if raceEnabled {
		name += "-race"
		args = append(args, "-race")
	}
	out := filepath.Join(binaries.dir, name)
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	cmd := exec.Command("go", append(args, "-o", tmp, pkg)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	binaries.built[pkg] = out
	return out, nil
}
