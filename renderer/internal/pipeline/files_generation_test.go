package pipeline

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// swap reports the generation it recorded; latestGeneration agrees.
func TestSwapReturnsGeneration(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "nginx.conf")
	if g, ok, err := latestGeneration(dest); g != 0 || ok || err != nil {
		t.Fatalf("no generations yet: %d %v %v", g, ok, err)
	}
	for want := 1; want <= 3; want++ {
		if got := stageSwap(t, dest, fmt.Sprintf("v%d\n", want), 5, 0); got != want {
			t.Errorf("swap %d returned generation %d", want, got)
		}
		if g, ok, err := latestGeneration(dest); g != want || !ok || err != nil {
			t.Errorf("latestGeneration = %d %v %v, want %d", g, ok, err, want)
		}
		if got, err := readGeneration(dest, want); string(got) != fmt.Sprintf("v%d\n", want) || err != nil {
			t.Errorf("generation %d holds %q %v", want, got, err)
		}
	}
}

// restoreGeneration makes exactly that generation live and drops every
// newer one (they failed or were never loaded).
func TestRestoreGenerationExact(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "nginx.conf")
	for i := 1; i <= 5; i++ {
		stageSwap(t, dest, fmt.Sprintf("v%d\n", i), 10, 0)
	}
	if err := restoreGeneration(dest, 2, keepOwner); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, dest); got != "v2\n" {
		t.Errorf("live = %q, want v2", got)
	}
	if gens, _ := generations(dest); !slices.Equal(gens, []int{1, 2}) {
		t.Errorf("generations %v, want [1 2]", gens)
	}
	if g := stageSwap(t, dest, "v6\n", 10, 0); g != 3 {
		t.Errorf("next swap recorded %d, want 3", g)
	}
	noStaged(t, dir)
}

// Restoring a generation that does not exist is an error and changes
// nothing.
func TestRestoreGenerationMissing(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "nginx.conf")
	for i := 1; i <= 3; i++ {
		stageSwap(t, dest, fmt.Sprintf("v%d\n", i), 10, 0)
	}
	err := restoreGeneration(dest, 9, keepOwner)
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "generation 9") {
		t.Fatalf("restore of generation 9: %v, want a not-exist error naming it", err)
	}
	if got := readString(t, dest); got != "v3\n" {
		t.Errorf("live = %q, want v3 untouched", got)
	}
	if gens, _ := generations(dest); !slices.Equal(gens, []int{1, 2, 3}) {
		t.Errorf("generations %v, want [1 2 3]", gens)
	}
	noStaged(t, dir)
}

func TestPruneKeepsProtected(t *testing.T) {
	for _, c := range []struct {
		keep, protect int
		want          []int
	}{
		{2, 0, []int{4, 5}},
		{2, 1, []int{1, 5}},
		{2, 3, []int{3, 5}},
		{2, 5, []int{4, 5}},
		{2, 9, []int{4, 5}}, // not a generation: nothing to protect
		{1, 2, []int{2}},
		{0, 2, []int{2}}, // protected even when it exceeds keep
		{7, 1, []int{1, 2, 3, 4, 5}},
	} {
		dest := filepath.Join(t.TempDir(), "nginx.conf")
		for i := 1; i <= 5; i++ {
			stageSwap(t, dest, fmt.Sprintf("v%d\n", i), 10, 0)
		}
		if err := prune(dest, c.keep, c.protect); err != nil {
			t.Fatal(err)
		}
		if gens, _ := generations(dest); !slices.Equal(gens, c.want) {
			t.Errorf("prune keep=%d protect=%d: %v, want %v", c.keep, c.protect, gens, c.want)
		}
	}
}

// Several unverified swaps in a row never prune the last verified
// generation, and there are never more than keep.
func TestSwapNeverPrunesVerified(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "nginx.conf")
	verified := stageSwap(t, dest, "good\n", 2, 0)
	for i := range 4 {
		g := stageSwap(t, dest, fmt.Sprintf("unverified %d\n", i), 2, verified)
		gens, _ := generations(dest)
		if !slices.Equal(gens, []int{verified, g}) {
			t.Fatalf("after unverified swap %d: generations %v, want [%d %d]", i, gens, verified, g)
		}
	}
	if err := restoreGeneration(dest, verified, keepOwner); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, dest); got != "good\n" {
		t.Errorf("live = %q, want the verified one", got)
	}
}
