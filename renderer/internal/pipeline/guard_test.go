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

func TestStaleGuardHoldsThenApplies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "nginx.conf")
		leaderErr := errors.New("no leader")
		p := New(context.Background(), Options{
			MaxRemoval: 0.5, HoldDown: 30 * time.Second,
			Leader: func(context.Context) error { return leaderErr },
		}, []Target{{Template: "t", Dest: dest, Proxy: "nginx", Backends: NginxUpstreams}})
		in := func(s string) *renderer.RenderInput { return &renderer.RenderInput{Path: dest, Contents: []byte(s)} }

		if _, err := p.Render(in(servers(4))); err != nil {
			t.Fatal(err)
		}
		// Losing 1 of 4 is normal churn: applied at once.
		if res, err := p.Render(in(servers(3))); err != nil || !res.DidRender {
			t.Fatalf("3 of 4: %v %+v", err, res)
		}
		// Losing everything is held.
		res, err := p.Render(in(servers(0)))
		if err != nil || res.DidRender {
			t.Fatalf("empty render not held: %v %+v", err, res)
		}
		if b, _ := os.ReadFile(dest); string(b) != servers(3) {
			t.Fatal("live file changed while held")
		}
		at, ok := p.NextHold()
		if !ok || at.Sub(time.Now()) != 30*time.Second {
			t.Fatalf("NextHold = %v %v", at, ok)
		}
		if st := p.Status()[dest]; st.Held != 1 || st.HeldSince.IsZero() || st.Swaps != 2 ||
			st.HeldBackendsBefore != 3 || st.HeldBackendsAfter != 0 || strings.Join(st.HeldEmptied, ",") != "svc_web" {
			t.Errorf("status %+v", st)
		}

		time.Sleep(30 * time.Second)
		p.ApplyHeld() // no leader: still held, retried later
		if b, _ := os.ReadFile(dest); string(b) != servers(3) {
			t.Fatal("applied during a leaderless period")
		}
		leaderErr = nil
		at, _ = p.NextHold()
		time.Sleep(time.Until(at))
		p.ApplyHeld()
		if b, _ := os.ReadFile(dest); string(b) != servers(0) {
			t.Fatalf("held render not applied after hold-down with a leader:\n%s", b)
		}
		if _, ok := p.NextHold(); ok {
			t.Error("still holding after apply")
		}
		if st := p.Status()[dest]; st.Held != 1 || !st.HeldSince.IsZero() || st.Swaps != 3 ||
			st.HeldBackendsBefore != 0 || st.HeldEmptied != nil {
			t.Errorf("status after apply %+v", st)
		}
	})
}

func TestStaleGuardClearedByRecovery(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "nginx.conf")
	p := New(context.Background(), Options{MaxRemoval: 0.5, HoldDown: time.Hour},
		[]Target{{Template: "t", Dest: dest, Proxy: "nginx", Backends: NginxUpstreams}})
	p.Render(&renderer.RenderInput{Path: dest, Contents: []byte(servers(4))})
	p.Render(&renderer.RenderInput{Path: dest, Contents: []byte(servers(1))})
	if _, ok := p.NextHold(); !ok {
		t.Fatal("4 -> 1 not held")
	}
	// Consul recovers: the next render equals the live file; the hold goes.
	p.Render(&renderer.RenderInput{Path: dest, Contents: []byte(servers(4))})
	if _, ok := p.NextHold(); ok {
		t.Error("hold survived a recovered render")
	}
}

func TestStaleGuardHoldIsNotResetByNewerRenders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "nginx.conf")
		p := New(context.Background(), Options{MaxRemoval: 0.5, HoldDown: 30 * time.Second},
			[]Target{{Template: "t", Dest: dest, Proxy: "nginx", Backends: NginxUpstreams}})
		p.Render(&renderer.RenderInput{Path: dest, Contents: []byte(servers(8))})
		start := time.Now()
		for i := range 3 {
			p.Render(&renderer.RenderInput{Path: dest, Contents: []byte(servers(i % 2))})
			time.Sleep(10 * time.Second)
		}
		at, ok := p.NextHold()
		if !ok || !at.Equal(start.Add(30*time.Second)) {
			t.Errorf("hold due at %v, want %v: newer renders restarted it", at.Sub(start), 30*time.Second)
		}
	})
}
