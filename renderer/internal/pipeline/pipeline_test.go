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
)

// rejectWord is a Validator that rejects any file containing "BAD" and
// counts its calls.
type rejectWord struct{ calls int }

func (v *rejectWord) Validate(_ context.Context, path string) error {
	v.calls++
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if bytes.Contains(b, []byte("BAD")) {
		return errors.New("contains BAD")
	}
	return nil
}

func setup(t *testing.T) (*Pipeline, *rejectWord, string) {
	t.Helper()
	v := &rejectWord{}
	dest := filepath.Join(t.TempDir(), "proxy.conf")
	p := New(context.Background(), Options{}, []Target{{Template: "t.tmpl", Dest: dest, Proxy: "nginx", Validator: v, Keep: 3}})
	return p, v, dest
}

func render(t *testing.T, p *Pipeline, dest, s string) (*renderer.RenderResult, error) {
	t.Helper()
	return p.Render(&renderer.RenderInput{Path: dest, Contents: []byte(s)})
}

func TestFirstRenderSwapsAndCompletes(t *testing.T) {
	p, _, dest := setup(t)
	if p.Complete() {
		t.Fatal("complete before any render")
	}
	res, err := render(t, p, dest, "one\n")
	if err != nil || !res.DidRender {
		t.Fatalf("render: %v %+v", err, res)
	}
	if b, _ := os.ReadFile(dest); string(b) != "one\n" {
		t.Fatalf("live = %q", b)
	}
	if !p.Complete() {
		t.Error("not complete after an accepted render")
	}
	if got := p.TakeChanged(); len(got) != 1 || got[0] != "nginx" {
		t.Errorf("changed = %v", got)
	}
}

func TestSameBytesNoWriteNoValidation(t *testing.T) {
	p, v, dest := setup(t)
	render(t, p, dest, "one\n")
	p.TakeChanged()
	fi1, _ := os.Stat(dest)
	calls := v.calls
	res, err := render(t, p, dest, "one\n")
	if err != nil || res.DidRender || !res.WouldRender {
		t.Fatalf("render: %v %+v", err, res)
	}
	fi2, _ := os.Stat(dest)
	if !os.SameFile(fi1, fi2) || !fi1.ModTime().Equal(fi2.ModTime()) {
		t.Error("live file rewritten for equal bytes")
	}
	if v.calls != calls {
		t.Error("validator ran for equal bytes")
	}
	if got := p.TakeChanged(); len(got) != 0 {
		t.Errorf("changed = %v, want none", got)
	}
}

func TestRejectedNeverReachesLive(t *testing.T) {
	p, v, dest := setup(t)
	render(t, p, dest, "one\n")
	p.TakeChanged()
	_, err := render(t, p, dest, "BAD\n")
	if err == nil || !strings.Contains(err.Error(), "contains BAD") {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(dest); string(b) != "one\n" {
		t.Fatalf("live = %q after rejection", b)
	}
	if st := p.Status()[dest]; st.LastError == nil || st.Rejected != 1 {
		t.Errorf("status = %+v", st)
	}
	ents, _ := os.ReadDir(filepath.Dir(dest))
	for _, e := range ents {
		if strings.Contains(e.Name(), "staged") {
			t.Errorf("staged file left: %s", e.Name())
		}
	}
	// The same bad bytes again are not validated again.
	calls := v.calls
	if _, err := render(t, p, dest, "BAD\n"); err == nil {
		t.Error("second identical bad render accepted")
	}
	if v.calls != calls {
		t.Error("validator re-ran on identical rejected bytes")
	}
	// A good render after that goes live.
	if res, err := render(t, p, dest, "two\n"); err != nil || !res.DidRender {
		t.Fatalf("good render after rejection: %v", err)
	}
	if p.Status()[dest].LastError != nil {
		t.Error("error not cleared by a good render")
	}
}

func TestGenerationsAndRollback(t *testing.T) {
	p, _, dest := setup(t)
	if err := os.WriteFile(dest, []byte("pre-existing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"g1\n", "g2\n", "g3\n", "g4\n"} {
		if _, err := render(t, p, dest, s); err != nil {
			t.Fatal(err)
		}
	}
	fi, _ := os.Stat(dest)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want the live file's 0600 kept", fi.Mode().Perm())
	}
	gens, _ := generations(dest)
	if len(gens) != 3 {
		t.Fatalf("kept %d generations, want 3", len(gens))
	}
	restored, err := p.Rollback("nginx", errors.New("reload failed"))
	if err != nil || len(restored) != 1 {
		t.Fatalf("rollback: %v %v", restored, err)
	}
	if b, _ := os.ReadFile(dest); string(b) != "g3\n" {
		t.Fatalf("after rollback live = %q, want g3", b)
	}
	// The rolled-back bytes count as rejected: not retried as is.
	if _, err := render(t, p, dest, "g4\n"); err == nil {
		t.Error("rolled-back render accepted again unchanged")
	}
}

func TestPlanChangesNothing(t *testing.T) {
	v := &rejectWord{}
	dest := filepath.Join(t.TempDir(), "proxy.conf")
	os.WriteFile(dest, []byte("a\nb\nc\n"), 0o644)
	var out bytes.Buffer
	p := New(context.Background(), Options{Plan: &out}, []Target{{Template: "t", Dest: dest, Proxy: "nginx", Validator: v}})
	res, err := p.Render(&renderer.RenderInput{Path: dest, Contents: []byte("a\nB2\nc\n")})
	if err != nil || res.DidRender {
		t.Fatalf("plan render: %v %+v", err, res)
	}
	if b, _ := os.ReadFile(dest); string(b) != "a\nb\nc\n" {
		t.Fatalf("plan changed the live file: %q", b)
	}
	if !strings.Contains(out.String(), "-b\n+B2\n") {
		t.Errorf("diff:\n%s", out.String())
	}
}
