package pipeline

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/renderer/internal/status"
)

// A render the proxy applies at runtime (Target.RuntimeOnly) skips the
// proxy's validation on its way in: issue 9's change -> served latency is
// mostly nginx -t / haproxy -c. Here "membership" is any line starting
// with "server ", the rest of the file is structure.

func membershipOnly(live, next []byte) bool {
	skel := func(b []byte) string {
		var keep []string
		for _, l := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(l, "server ") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	return skel(live) == skel(next)
}

func setupRuntimeOnly(t *testing.T) (*Pipeline, *rejectWord, string) {
	t.Helper()
	v := &rejectWord{}
	dest := filepath.Join(t.TempDir(), "proxy.conf")
	rec := status.NewRecorder(nil)
	rec.AddTemplate("t.tmpl", dest, "nginx")
	p := New(context.Background(), Options{Status: rec}, []Target{{Template: "t.tmpl", Dest: dest,
		Proxy: "nginx", Validator: v, Keep: 5, RuntimeOnly: membershipOnly}})
	return p, v, dest
}

// provedRender renders s and loads it successfully: the proxy runs it.
func provedRender(t *testing.T, p *Pipeline, dest, s string) {
	t.Helper()
	if _, err := render(t, p, dest, s); err != nil {
		t.Fatal(err)
	}
	if out := p.Load("nginx", func(Change) error { return nil }); out.Err != nil {
		t.Fatal(out.Err)
	}
}

func TestRuntimeOnlyRenderIsValidatedAfterTheLoad(t *testing.T) {
	p, v, dest := setupRuntimeOnly(t)
	provedRender(t, p, dest, "upstream\nserver a\n")
	before := v.calls
	if res, err := render(t, p, dest, "upstream\nserver a\nserver b\n"); err != nil || !res.DidRender {
		t.Fatalf("membership render: %v %+v", err, res)
	}
	if v.calls != before {
		t.Fatalf("validator ran %d times on the way in; a runtime-only change skips it", v.calls-before)
	}
	var got Change
	if out := p.Load("nginx", func(ch Change) error { got = ch; return nil }); out.Err != nil {
		t.Fatal(out.Err)
	}
	if v.calls != before+1 {
		t.Errorf("validator ran %d times after the load, want 1", v.calls-before)
	}
	if string(got.Running[dest]) != "upstream\nserver a\n" {
		t.Errorf("load saw running %q, want the proved generation", got.Running[dest])
	}
	// Proved now: the next membership change is quick again.
	render(t, p, dest, "upstream\nserver b\n")
	if v.calls != before+1 {
		t.Errorf("second membership render validated on the way in")
	}
}

// The proxy rejects, after the runtime apply, a file that went in
// unvalidated: Load rolls the file back to the proved generation and
// loads that, so a restart reads a config the proxy accepts.
func TestRuntimeOnlyRejectedAfterLoadRollsBack(t *testing.T) {
	p, _, dest := setupRuntimeOnly(t)
	provedRender(t, p, dest, "upstream\nserver a\n")
	if _, err := render(t, p, dest, "upstream\nserver a\nserver BAD\n"); err != nil {
		t.Fatalf("membership render refused on the way in: %v", err)
	}
	var loads []Change
	out := p.Load("nginx", func(ch Change) error { loads = append(loads, ch); return nil })
	if out.Err == nil || !strings.Contains(out.Err.Error(), "rejected by the proxy's validation") {
		t.Fatalf("load error %v, want the late rejection", out.Err)
	}
	if len(out.Restored) != 1 || out.RetryErr != nil || len(loads) != 2 {
		t.Fatalf("restored %v, retry %v, loads %d: want one file restored and reloaded", out.Restored, out.RetryErr, len(loads))
	}
	if len(loads[1].Running) != 0 {
		t.Errorf("the load after the rollback must reload, not patch: running %v", loads[1].Running)
	}
	if b, _ := os.ReadFile(dest); string(b) != "upstream\nserver a\n" {
		t.Errorf("live = %q, want the proved generation back", b)
	}
	// The same render is refused now (remembered), a new one is validated
	// first: the live file is proved, but the refused bytes are not retried.
	if _, err := render(t, p, dest, "upstream\nserver a\nserver BAD\n"); err == nil {
		t.Error("the rejected render was accepted again")
	}
}

// A structural change, or one on top of a generation the proxy has not
// loaded yet, is validated before it goes live.
func TestRuntimeOnlyNeedsAProvedLiveFile(t *testing.T) {
	p, v, dest := setupRuntimeOnly(t)
	render(t, p, dest, "upstream\nserver a\n") // not loaded yet
	before := v.calls
	render(t, p, dest, "upstream\nserver a\nserver b\n")
	if v.calls != before+1 {
		t.Errorf("membership change over an unloaded generation: %d validations, want 1", v.calls-before)
	}
	p.Load("nginx", func(Change) error { return nil })
	before = v.calls
	render(t, p, dest, "upstream two\nserver a\n")
	if v.calls != before+1 {
		t.Errorf("structural change: %d validations, want 1", v.calls-before)
	}
	if _, err := render(t, p, dest, "upstream two BAD\nserver a\n"); err == nil {
		t.Error("a structural render the validator rejects went live")
	}
}
