package pipeline

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul-template/renderer"

	"github.com/switchyard/switchyard/renderer/internal/status"
)

func servers(n int) string {
	var b strings.Builder
	b.WriteString("upstream svc_web {\n")
	for i := range n {
		b.WriteString("    server 10.0.0." + string(rune('1'+i)) + ":80;\n")
	}
	b.WriteString("}\nserver {\n    listen 80;\n}\n")
	return b.String()
}

// answerAll is the supervisor's part: ask Consul for every due hold and
// bring the answer.
func answerAll(p *Pipeline, leaderErr error) {
	now := time.Now()
	for dest, sum := range p.AskHolds(now) {
		p.Answer(dest, sum, leaderErr, now)
	}
}

func guarded(t *testing.T, v Validator) (*Pipeline, string, *status.Recorder) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "nginx.conf")
	rec := status.NewRecorder(nil)
	rec.AddTemplate("t", dest, "nginx")
	p := New(context.Background(), Options{MaxRemoval: 0.5, HoldDown: 30 * time.Second, Status: rec},
		[]Target{{Template: "t", Dest: dest, Proxy: "nginx", Backends: NginxUpstreams, Validator: v}})
	return p, dest, rec
}

func in(dest, s string) *renderer.RenderInput {
	return &renderer.RenderInput{Path: dest, Contents: []byte(s)}
}

func TestStaleGuardHoldsThenApplies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, dest, rec := guarded(t, nil)
		if _, err := p.Render(in(dest, servers(4))); err != nil {
			t.Fatal(err)
		}
		// Losing 1 of 4 is normal churn: applied at once.
		if res, err := p.Render(in(dest, servers(3))); err != nil || !res.DidRender {
			t.Fatalf("3 of 4: %v %+v", err, res)
		}
		// Losing everything is held.
		if res, err := p.Render(in(dest, servers(0))); err != nil || res.DidRender {
			t.Fatalf("empty render not held: %v %+v", err, res)
		}
		at, ok := p.NextHold()
		if !ok || time.Until(at) != 30*time.Second {
			t.Fatalf("NextHold = %v %v", at, ok)
		}
		st := rec.Snapshot().Templates[0]
		if st.Holds != 1 || !st.Held() || st.Swaps != 2 || st.HeldBackendsBefore != 3 ||
			st.HeldBackendsAfter != 0 || strings.Join(st.HeldEmptied, ",") != "svc_web" {
			t.Errorf("status %+v", st)
		}
		time.Sleep(30 * time.Second)
		answerAll(p, errors.New("no leader")) // still held, asked again later
		if b, _ := os.ReadFile(dest); string(b) != servers(3) {
			t.Fatal("applied during a leaderless period")
		}
		at, _ = p.NextHold()
		time.Sleep(time.Until(at))
		answerAll(p, nil)
		if b, _ := os.ReadFile(dest); string(b) != servers(0) {
			t.Fatalf("held render not applied with a leader:\n%s", b)
		}
		if _, ok := p.NextHold(); ok {
			t.Error("still holding after apply")
		}
		if st := rec.Snapshot().Templates[0]; st.Holds != 1 || st.Held() || st.Swaps != 3 {
			t.Errorf("status after apply %+v", st)
		}
	})
}

func TestStaleGuardClearedByRecovery(t *testing.T) {
	p, dest, _ := guarded(t, nil)
	p.Render(in(dest, servers(4)))
	p.Render(in(dest, servers(1)))
	if _, ok := p.NextHold(); !ok {
		t.Fatal("4 -> 1 not held")
	}
	p.Render(in(dest, servers(4))) // equal to the live file: the hold goes
	if _, ok := p.NextHold(); ok {
		t.Error("hold survived a recovered render")
	}
}

func TestStaleGuardHoldIsNotResetByNewerRenders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, dest, _ := guarded(t, nil)
		p.Render(in(dest, servers(8)))
		start := time.Now()
		for i := range 3 {
			p.Render(in(dest, servers(i%2)))
			time.Sleep(10 * time.Second)
		}
		at, ok := p.NextHold()
		if !ok || !at.Equal(start.Add(30*time.Second)) {
			t.Errorf("hold due at %v, want 30s: newer renders restarted it", at.Sub(start))
		}
	})
}

// TestHeldRenderFailingOnApplyEndsTheHold: issue 7 item 2. A held render
// whose validation fails when it is applied is refused once and the hold
// is over; nothing is due any more, so the supervisor cannot spin on it.
func TestHeldRenderFailingOnApplyEndsTheHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := &rejectWord{}
		p, dest, rec := guarded(t, v)
		p.Render(in(dest, servers(4)))
		p.Render(in(dest, servers(0)))
		// The validator turns against the held bytes by the time they are
		// applied (a proxy upgrade, a certificate gone).
		vBefore := v.calls
		time.Sleep(30 * time.Second)
		v.failAll = true
		answerAll(p, nil)
		if v.calls != vBefore+1 {
			t.Fatalf("validated %d times on apply", v.calls-vBefore)
		}
		if _, ok := p.NextHold(); ok {
			t.Fatal("a held render that failed on apply is still due")
		}
		if got := p.AskHolds(time.Now().Add(time.Hour)); len(got) != 0 {
			t.Fatalf("still asking: %v", got)
		}
		if b, _ := os.ReadFile(dest); string(b) != servers(4) {
			t.Fatal("live file changed")
		}
		if st := rec.Snapshot().Templates[0]; st.LastErrorKind != status.KindValidation || st.Held() {
			t.Errorf("status %+v", st)
		}
	})
}

// TestNewerRejectedRenderClearsHold: issue 7 item 5. When a render newer
// than the held one fails validation, the hold is over: after the
// hold-down the older held render does not go live.
func TestNewerRejectedRenderClearsHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, dest, _ := guarded(t, &rejectWord{})
		p.Render(in(dest, servers(4)))
		p.Render(in(dest, servers(0)))
		if _, err := p.Render(in(dest, servers(1)+"BAD;\n")); err == nil {
			t.Fatal("bad render accepted")
		}
		time.Sleep(time.Minute)
		answerAll(p, nil)
		if b, _ := os.ReadFile(dest); string(b) != servers(4) {
			t.Fatalf("an older held render went live after a newer one failed:\n%s", b)
		}
	})
}
