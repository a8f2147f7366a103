package pipeline

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul-template/renderer"

	"github.com/switchyard/switchyard/renderer/internal/status"
)

// rejectWord is a Validator that rejects any file containing "BAD" and
// counts its calls.
type rejectWord struct {
	calls   int
	failAll bool // reject everything from now on
}

func (v *rejectWord) Validate(_ context.Context, path string) error {
	v.calls++
	if v.failAll {
		return errors.New("validator refuses everything")
	}
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
	p, v, dest, _ := setupRec(t)
	return p, v, dest
}

// setupRec is setup with the status recorder the pipeline reports into.
func setupRec(t *testing.T) (*Pipeline, *rejectWord, string, *status.Recorder) {
	t.Helper()
	v := &rejectWord{}
	dest := filepath.Join(t.TempDir(), "proxy.conf")
	rec := status.NewRecorder(nil)
	rec.AddTemplate("t.tmpl", dest, "nginx")
	p := New(context.Background(), Options{Status: rec}, []Target{{Template: "t.tmpl", Dest: dest, Proxy: "nginx", Validator: v, Keep: 3}})
	return p, v, dest, rec
}

func tmplStatus(rec *status.Recorder) status.Template { return rec.Snapshot().Templates[0] }

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
	p, v, dest, rec := setupRec(t)
	render(t, p, dest, "one\n")
	p.TakeChanged()
	_, err := render(t, p, dest, "BAD\n")
	if err == nil || !strings.Contains(err.Error(), "contains BAD") {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(dest); string(b) != "one\n" {
		t.Fatalf("live = %q after rejection", b)
	}
	if st := tmplStatus(rec); st.LastError == "" || st.LastErrorKind != status.KindValidation || st.Rejected != 1 {
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
	if tmplStatus(rec).LastError != "" {
		t.Error("error not cleared by a good render")
	}
}

// TestRollbackRestoresLastProvedGeneration: issue 7 item 3. Two swaps
// land in one batch, then the reload fails: the rollback restores the
// generation the last good reload proved, not "newest minus one" (a config
// no proxy ever loaded).
func TestRollbackRestoresLastProvedGeneration(t *testing.T) {
	p, _, dest, rec := setupRec(t)
	if err := os.WriteFile(dest, []byte("pre-existing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	render(t, p, dest, "g1\n")
	if out := p.Load("nginx", func(Change) error { return nil }); out.Err != nil {
		t.Fatal(out.Err)
	}
	render(t, p, dest, "g2\n") // never loaded
	render(t, p, dest, "g3\n")
	fi, _ := os.Stat(dest)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want the live file's 0600 kept", fi.Mode().Perm())
	}
	loads := 0
	out := p.Load("nginx", func(Change) error {
		loads++
		if loads == 1 {
			return errors.New("reload did not take")
		}
		return nil
	})
	if out.Err == nil || len(out.Restored) != 1 || out.RollbackErr != nil || out.RetryErr != nil || loads != 2 {
		t.Fatalf("load: %+v after %d loads", out, loads)
	}
	if b, _ := os.ReadFile(dest); string(b) != "g1\n" {
		t.Fatalf("after rollback live = %q, want g1, the last proved", b)
	}
	if st := tmplStatus(rec); st.LastErrorKind != status.KindRollback {
		t.Errorf("status after rollback: %+v", st)
	}
	// The rolled-back bytes are refused as they are.
	if _, err := render(t, p, dest, "g3\n"); err == nil {
		t.Error("rolled-back render accepted again unchanged")
	}
	// A failed load of an unchanged file restores nothing.
	if out := p.Load("nginx", func(Change) error { return errors.New("boom") }); len(out.Restored) != 0 {
		t.Errorf("restored %v when nothing changed since the last proof", out.Restored)
	}
}

// TestLoadFreezesRenders: a render that arrives while a reload is being
// verified waits for it, so a failed verify rolls back the file it tested,
// never the newer render, which then goes live normally.
func TestLoadFreezesRenders(t *testing.T) {
	p, _, dest, _ := setupRec(t)
	render(t, p, dest, "good\n")
	p.Load("nginx", func(Change) error { return nil })
	render(t, p, dest, "bad-reload\n")
	inLoad, release := make(chan struct{}), make(chan struct{})
	done := make(chan Loaded, 1)
	go func() {
		n := 0
		done <- p.Load("nginx", func(Change) error {
			n++
			if n == 1 {
				close(inLoad)
				<-release
				return errors.New("verify failed")
			}
			return nil
		})
	}()
	<-inLoad
	rendered := make(chan error, 1)
	go func() { _, err := render(t, p, dest, "newer\n"); rendered <- err }()
	select {
	case err := <-rendered:
		t.Fatalf("render went through during a load: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if out := <-done; len(out.Restored) != 1 {
		t.Fatalf("load: %+v", out)
	}
	if err := <-rendered; err != nil {
		t.Fatalf("newer render after the rollback: %v", err)
	}
	if b, _ := os.ReadFile(dest); string(b) != "newer\n" {
		t.Fatalf("live = %q, want the newer render", b)
	}
}

// TestWriteFailureIsReported: issue 7 item 6. A read or stage failure of
// the live file reaches the status as a write error, and the next render
// is tried again (no refusal memo for write errors).
func TestWriteFailureIsReported(t *testing.T) {
	p, _, dest, rec := setupRec(t)
	render(t, p, dest, "one\n")
	// The live path turns into something we cannot read or replace.
	os.Remove(dest)
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := render(t, p, dest, "two\n"); err == nil {
			t.Fatal("render over a directory succeeded")
		}
	}
	st := tmplStatus(rec)
	if st.LastErrorKind != status.KindWrite || st.WriteErrors != 2 || st.LastError == "" {
		t.Fatalf("status: %+v", st)
	}
	if ok, reason := rec.Snapshot().Ready(); ok || !strings.Contains(reason, "write") {
		t.Errorf("ready = %v %q", ok, reason)
	}
}

func TestPlanChangesNothing(t *testing.T) {
	v := &rejectWord{}
	dest := filepath.Join(t.TempDir(), "proxy.conf")
	os.WriteFile(dest, []byte("a\nb\nc\n"), 0o644)
	var out bytes.Buffer
	p := NewPlan(context.Background(), &out, time.Second, []Target{{Template: "t", Dest: dest, Proxy: "nginx", Validator: v}})
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
