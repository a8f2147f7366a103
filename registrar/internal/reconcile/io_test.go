package reconcile

import (
	"errors"
	"reflect"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/switchyard/switchyard/registrar/internal/container"
	"github.com/switchyard/switchyard/registrar/internal/service"
)

// A hung inspect (dockerd's known lock-up) costs one call timeout, not the
// loop: other containers are still registered, and the container whose
// inspect hangs keeps its services while /ready says a retry is pending.
func TestHungInspectTimesOutAndTheLoopGoesOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Resync: time.Hour}, func(d *fakeDocker, _ *fakeConsul) {
			d.set(ctr("a", 1001))
		})
		h.wantIDs(sid("a"))
		h.docker.setHang("a", nil, true)
		h.hint("a")
		h.docker.set(ctr("b", 1002))
		h.hint("b")
		h.advance(10 * time.Second) // the default call timeout
		h.wantIDs(sid("a"), sid("b"))
		if h.rec.Ready() {
			t.Error("ready while the inspect of a awaits a retry")
		}
		h.docker.setHang("a", nil, false)
		h.advance(30 * time.Second)
		if !h.rec.Ready() {
			t.Error("not ready after the engine answers again")
		}
	})
}

// A call that ignores its deadline (or a step that never ends) must not
// leave /ready at 200: once the loop has been inside one step for longer
// than the bound, it is not ready.
func TestStalledLoopIsNotReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Resync: time.Hour}, func(d *fakeDocker, _ *fakeConsul) {
			d.set(ctr("a", 1001))
		})
		release := make(chan struct{})
		unblock := sync.OnceFunc(func() { close(release) })
		t.Cleanup(unblock) // before the harness stops (cleanups run last first)
		h.docker.setHang("a", release, true)
		h.hint("a")
		h.advance(time.Minute - time.Second)
		if !h.rec.Ready() {
			t.Error("not ready before the stall bound")
		}
		h.advance(2 * time.Second)
		if h.rec.Ready() {
			t.Fatal("ready while the loop has been stuck in one step for over a minute")
		}
		h.docker.setHang("a", nil, false)
		unblock()
		synctest.Wait()
		if !h.rec.Ready() {
			t.Error("not ready after the step finished")
		}
	})
}

// Unknown is not absent: an inspect that fails at start-up must not
// deregister the services a running container already has, and a pending
// inspect retry is not ready.
func TestInspectFailureAtStartupKeepsServices(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Resync: time.Hour}, func(d *fakeDocker, c *fakeConsul) {
			d.set(ctr("a", 1001))
			d.failInsp["a"] = errors.New("docker hiccup")
			// Registered by this registrar before it restarted.
			s := service.Service{ID: sid("a"), Meta: map[string]string{service.MetaNode: node, service.MetaContainerID: "a"}}
			c.services[s.ID] = s
		})
		h.wantIDs(sid("a"))
		if h.rec.Ready() {
			t.Error("ready while an inspect retry is pending")
		}
		w := h.consul.writeCount()
		h.docker.setFailInspect("a", nil)
		h.advance(time.Second)
		h.wantIDs(sid("a"))
		if s, _ := h.consul.get(sid("a")); s.Port != 1001 {
			t.Errorf("not refreshed after the retry: %+v", s)
		}
		if h.consul.writeCount() != w+1 {
			t.Errorf("%d writes after the retry, want 1 (the refresh)", h.consul.writeCount()-w)
		}
		if !h.rec.Ready() {
			t.Error("not ready after the retry succeeded")
		}
	})
}

// A periodic resync whose inspect of a known container fails keeps what
// that container had, too.
func TestInspectFailureDuringResyncKeepsServices(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Resync: 10 * time.Second}, func(d *fakeDocker, _ *fakeConsul) {
			d.set(ctr("a", 1001))
		})
		h.docker.setFailInspect("a", errors.New("docker hiccup"))
		h.advance(10 * time.Second)
		h.wantIDs(sid("a"))
		if h.rec.Ready() {
			t.Error("ready while an inspect retry is pending")
		}
		// Known to be gone: now it goes.
		h.docker.remove("a")
		h.docker.setFailInspect("a", nil)
		h.advance(10 * time.Second)
		h.wantIDs()
	})
}

// A container with SERVICE_ID=vault never takes over a hand-registered
// vault: refused once, shown on Status, no retry storm, other containers
// unaffected; once the holder removes it, the container gets it.
func TestForeignServiceIDIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		vault := func(c *container.Container) { c.Labels = map[string]string{"SERVICE_ID": "vault"} }
		h := start(t, Options{Resync: 10 * time.Second}, func(d *fakeDocker, c *fakeConsul) {
			c.services["vault"] = service.Service{ID: "vault", Name: "vault", Port: 8200}
			d.set(ctr("a", 1001, vault))
			d.set(ctr("b", 1002))
		})
		h.wantIDs(sid("b"), "vault")
		if s, _ := h.consul.get("vault"); s.Port != 8200 || s.Meta != nil {
			t.Fatalf("hand-registered vault taken over: %+v", s)
		}
		st := h.rec.Status()
		want := []Refusal{{ServiceID: "vault", ContainerID: "a", Container: "c-a", Holder: ""}}
		if !reflect.DeepEqual(st.Refused, want) || st.TakeoversRefused != 1 || !st.Ready {
			t.Fatalf("status %+v, want one refusal and ready", st)
		}
		w := h.consul.writeCount()
		h.advance(9 * time.Second)
		if n := h.consul.writeCount() - w; n != 0 {
			t.Fatalf("%d writes between resyncs: a refusal is not retried with backoff", n)
		}
		h.advance(time.Second) // a resync tries again, quietly
		if st := h.rec.Status(); st.TakeoversRefused != 1 || len(st.Refused) != 1 {
			t.Fatalf("after a resync: %+v", st)
		}

		// The holder removes it: the container gets it at the next resync,
		// and from then on it is ours to remove.
		h.consul.remove("vault")
		h.advance(10 * time.Second)
		if s, _ := h.consul.get("vault"); s.ContainerID != "a" {
			t.Fatalf("vault after its holder left: %+v", s)
		}
		if st := h.rec.Status(); len(st.Refused) != 0 {
			t.Fatalf("refusal still listed: %+v", st.Refused)
		}
		h.docker.remove("a")
		h.hint("a")
		h.wantIDs(sid("b"))
	})
}

// The container goes while its ID is held by someone else: the holder's
// service stays, and the refusal is forgotten with the container.
func TestRefusedContainerGoesHolderStays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		vault := func(c *container.Container) { c.Labels = map[string]string{"SERVICE_ID": "vault"} }
		h := start(t, Options{Resync: time.Hour}, func(d *fakeDocker, c *fakeConsul) {
			c.services["vault"] = service.Service{ID: "vault", Port: 8200, Meta: map[string]string{service.MetaNode: "other-node"}}
			d.set(ctr("a", 1001, vault))
		})
		if st := h.rec.Status(); len(st.Refused) != 1 || st.Refused[0].Holder != "other-node" {
			t.Fatalf("refused %+v", st.Refused)
		}
		h.docker.remove("a")
		h.hint("a")
		h.wantIDs("vault")
		if s, _ := h.consul.get("vault"); s.Port != 8200 {
			t.Fatalf("vault changed: %+v", s)
		}
		if st := h.rec.Status(); len(st.Refused) != 0 || st.TakeoversRefused != 1 {
			t.Fatalf("status after the container went: %+v", st)
		}
	})
}

// Forgetting a container is one delete: whatever happened to it (failed
// inspects, failed writes, rejected metadata, refusals), nothing about it
// is left once it is gone.
func TestGoneContainersLeaveNoState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bad := func(c *container.Container) { c.Labels = map[string]string{"SERVICE_BAD KEY": "x"} }
		vault := func(c *container.Container) { c.Labels = map[string]string{"SERVICE_ID": "vault"} }
		h := start(t, Options{Resync: 30 * time.Second, RetryMax: time.Second}, func(d *fakeDocker, c *fakeConsul) {
			c.services["vault"] = service.Service{ID: "vault"}
			c.reject[sid("r")] = true
			d.set(ctr("a", 1001, bad))
			d.set(ctr("v", 1002, vault))
			d.set(ctr("r", 1003))
			d.set(ctr("f", 1004))
			d.failInsp["f"] = errors.New("docker hiccup")
		})
		if st := h.rec.Status(); st.Containers != 4 || st.RetriesPending != 2 {
			t.Fatalf("status %+v", st)
		}
		for _, id := range []string{"a", "v", "r", "f"} {
			h.docker.remove(id)
			h.hint(id)
		}
		h.advance(30 * time.Second)
		h.wantIDs("vault")
		if st := h.rec.Status(); st.Containers != 0 || st.RetriesPending != 0 || len(st.Refused) != 0 || !st.Ready {
			t.Fatalf("status after every container went: %+v", st)
		}
		h.stop()
		if len(h.rec.ctrs) != 0 {
			t.Fatalf("state left for %d containers", len(h.rec.ctrs))
		}
	})
}
