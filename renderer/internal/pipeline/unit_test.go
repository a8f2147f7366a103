package pipeline

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/consul-template/renderer"

	"github.com/switchyard/switchyard/renderer/internal/status"
)

// pairValidator accepts a set only when both files name the same word:
// like an nginx fragment whose proxy_pass names an upstream another
// fragment defines. It reads the staged file for a replaced path, the
// live one otherwise, as the proxy would load them.
type pairValidator struct {
	a, b  string
	calls int
}

func (v *pairValidator) ValidateSet(_ context.Context, replace map[string]string) error {
	v.calls++
	read := func(live string) string {
		if s, ok := replace[live]; ok {
			live = s
		}
		b, _ := os.ReadFile(live)
		return strings.TrimSpace(string(b))
	}
	if a, b := read(v.a), read(v.b); a != b || strings.Contains(a, "BAD") {
		return errors.New("upstream " + b + " not defined (defines " + a + ")")
	}
	return nil
}

func unitSetup(t *testing.T) (*Pipeline, *pairValidator, string, string, *status.Recorder) {
	t.Helper()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "upstream.conf"), filepath.Join(dir, "server.conf")
	v := &pairValidator{a: a, b: b}
	rec := status.NewRecorder(nil)
	rec.AddTemplate("a.tmpl", a, "nginx")
	rec.AddTemplate("b.tmpl", b, "nginx")
	p := New(context.Background(), Options{Status: rec}, []Target{
		{Template: "a.tmpl", Dest: a, Proxy: "nginx", Set: v},
		{Template: "b.tmpl", Dest: b, Proxy: "nginx", Set: v},
	})
	return p, v, a, b, rec
}

func pass(t *testing.T, p *Pipeline, files map[string]string) {
	t.Helper()
	for dest, s := range files {
		if _, err := p.Render(&renderer.RenderInput{Path: dest, Contents: []byte(s + "\n")}); err != nil {
			t.Fatal(err)
		}
	}
	p.Flush()
}

func live(t *testing.T, path string) string {
	t.Helper()
	b, _ := os.ReadFile(path)
	return string(bytes.TrimSpace(b))
}

// TestUnitSwapsTogetherOrNotAtAll: issue 13. Two templates feeding one
// proxy are one unit: a change that is only valid with both files goes
// live for both at the end of the pass; a pass where one member turns bad
// swaps neither; when both are good again, one batch, one changed proxy.
func TestUnitSwapsTogetherOrNotAtAll(t *testing.T) {
	p, v, a, b, rec := unitSetup(t)
	pass(t, p, map[string]string{a: "web", b: "web"})
	if live(t, a) != "web" || live(t, b) != "web" || !p.Complete() {
		t.Fatalf("first pass: %q %q complete=%v", live(t, a), live(t, b), p.Complete())
	}
	p.TakeChanged()

	// A rename only valid across both files: member by member against
	// the other's live file, each would be rejected.
	if _, err := p.Render(&renderer.RenderInput{Path: a, Contents: []byte("api\n")}); err != nil {
		t.Fatal(err)
	}
	if live(t, a) != "web" {
		t.Fatal("a member went live before the pass ended")
	}
	pass(t, p, map[string]string{b: "api"})
	if live(t, a) != "api" || live(t, b) != "api" {
		t.Fatalf("rename not applied to both: %q %q", live(t, a), live(t, b))
	}
	if got := p.TakeChanged(); len(got) != 1 {
		t.Fatalf("changed = %v, want the one proxy once", got)
	}

	// One member turns bad: neither is swapped, both are refused.
	calls := v.calls
	pass(t, p, map[string]string{a: "BAD", b: "BAD"})
	if live(t, a) != "api" || live(t, b) != "api" || v.calls != calls+1 {
		t.Fatalf("bad unit: %q %q after %d validations", live(t, a), live(t, b), v.calls-calls)
	}
	for _, tm := range rec.Snapshot().Templates {
		if tm.LastErrorKind != status.KindValidation {
			t.Errorf("%s: %+v", tm.Dest, tm)
		}
	}
	// The same bad pair again is not validated again.
	pass(t, p, map[string]string{a: "BAD", b: "BAD"})
	if v.calls != calls+1 {
		t.Error("the same refused unit was validated again")
	}
	pass(t, p, map[string]string{a: "db", b: "db"})
	if live(t, a) != "db" || live(t, b) != "db" {
		t.Fatalf("good again: %q %q", live(t, a), live(t, b))
	}
	for _, tm := range rec.Snapshot().Templates {
		if tm.LastError != "" || tm.Swaps != 3 {
			t.Errorf("%s: %+v", tm.Dest, tm)
		}
	}
}

// TestUnitChangeSplitOverTwoPasses: the two watches of one change can
// fire in two runner passes. The first member's render is refused alone
// but stays pending, and goes live with the second's.
func TestUnitChangeSplitOverTwoPasses(t *testing.T) {
	p, _, a, b, _ := unitSetup(t)
	pass(t, p, map[string]string{a: "web", b: "web"})
	pass(t, p, map[string]string{a: "api"})
	if live(t, a) != "web" {
		t.Fatal("half a rename went live")
	}
	pass(t, p, map[string]string{b: "api"})
	if live(t, a) != "api" || live(t, b) != "api" {
		t.Fatalf("rename split over two passes: %q %q", live(t, a), live(t, b))
	}
}
