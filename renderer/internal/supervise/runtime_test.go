package supervise

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// patcher is a fake proxy that applies at runtime whatever does not
// contain "structural", and fails an apply while err is set.
type patcher struct {
	*fakeProxy
	pmu     sync.Mutex
	err     error
	patched []string // "running->live" of each call that applied
	calls   int
}

func (p *patcher) Patch(_ context.Context, running, live map[string][]byte) (bool, error) {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	p.calls++
	var from, to string
	for d := range live {
		from, to = string(running[d]), string(live[d])
	}
	if strings.Contains(to, "structural") {
		return false, nil
	}
	if p.err != nil {
		return false, p.err
	}
	p.patched = append(p.patched, from+"->"+to)
	return true, nil
}

func (p *patcher) seen() (calls int, patched []string) {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	return p.calls, append([]string(nil), p.patched...)
}

// startPatching starts the loop with an external patching proxy and
// renders v0, which the proxy is reloaded onto (the first load of an
// external proxy is a reload: it was started by someone else).
func startPatching(t *testing.T, runtime bool) (*harness, *patcher) {
	t.Helper()
	var pt *patcher
	h := startWith(t, false, 10*time.Millisecond, 100*time.Millisecond, func(o *Options) {
		pt = &patcher{fakeProxy: o.Proxies["p"].(*fakeProxy)}
		o.Proxies["p"] = pt
		o.RuntimeApply = runtime
	})
	h.render(t, "v0")
	time.Sleep(time.Second)
	h.wantReloads(t, 1, "after the first render")
	return h, pt
}

func TestMembershipChangeAppliedAtRuntimeWithoutReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, pt := startPatching(t, true)
		h.render(t, "v1")
		time.Sleep(time.Second)
		h.render(t, "v2")
		time.Sleep(time.Second)
		if _, patched := pt.seen(); strings.Join(patched, " ") != "v0->v1 v1->v2" {
			t.Fatalf("patched %q, want the running config each time it changed: v0->v1 v1->v2", patched)
		}
		h.wantReloads(t, 1, "after two membership changes")
		if p := h.proxyStatus(); p.RuntimeApplies != 2 || p.Reloads != 1 || p.ReloadPending || p.RuntimeFailures != 0 {
			t.Fatalf("status %+v, want 2 runtime applies, no reload, nothing pending", p)
		}
	})
}

func TestStructuralChangeReloads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, pt := startPatching(t, true)
		h.render(t, "v1 structural")
		time.Sleep(time.Second)
		h.wantReloads(t, 2, "after a structural change")
		// The reload proved the new file: the next patch starts from it.
		h.render(t, "v2")
		time.Sleep(time.Second)
		if _, patched := pt.seen(); strings.Join(patched, " ") != "v1 structural->v2" {
			t.Fatalf("patched %q, want it to start from the reloaded config", patched)
		}
		if p := h.proxyStatus(); p.RuntimeApplies != 1 || p.Reloads != 2 || p.RuntimeFallbacks != 0 {
			t.Fatalf("status %+v, want 1 runtime apply, 1 reload, no fallback", p)
		}
	})
}

func TestFailedRuntimeApplyFallsBackToReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, pt := startPatching(t, true)
		pt.pmu.Lock()
		pt.err = errors.New("add server refused")
		pt.pmu.Unlock()
		h.render(t, "v1")
		time.Sleep(time.Second)
		h.wantReloads(t, 2, "after a failed runtime apply")
		p := h.proxyStatus()
		if p.RuntimeFailures != 1 || p.RuntimeFallbacks != 1 || p.Reloads != 2 || p.RuntimeApplies != 0 {
			t.Fatalf("status %+v, want 1 failure, 1 fallback reload", p)
		}
		if !strings.Contains(p.LastRuntimeError, "add server refused") || p.LastError != "" {
			t.Fatalf("status errors %q / %q, want the runtime error kept and the reload ok", p.LastRuntimeError, p.LastError)
		}
	})
}

func TestRuntimeApplyOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, pt := startPatching(t, false)
		h.render(t, "v1")
		time.Sleep(time.Second)
		h.wantReloads(t, 2, "with --runtime-apply=false")
		if calls, _ := pt.seen(); calls != 0 {
			t.Fatalf("Patch called %d times with runtime apply off", calls)
		}
	})
}
