package reconcile

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"testing/synctest"
	"time"

	"github.com/switchyard/switchyard/registrar/internal/container"
	"github.com/switchyard/switchyard/registrar/internal/service"
)

const node = "node1"

func ctr(id string, port int, mods ...func(*container.Container)) container.Container {
	c := container.Container{
		ID: id, Name: "c-" + id, Image: "webapp:1",
		State:       container.State{Running: true},
		NetworkMode: "bridge",
		Ports:       []container.Port{{Port: 8080, Proto: "tcp", Bindings: []container.Binding{{HostIP: "127.0.0.1", HostPort: port}}}},
	}
	for _, m := range mods {
		m(&c)
	}
	return c
}

func sid(id string) string { return node + ":c-" + id + ":8080" }

func exited(code int) func(*container.Container) {
	return func(c *container.Container) { c.State = container.State{ExitCode: code} }
}

// harness runs a Reconciler inside a synctest bubble.
type harness struct {
	t      *testing.T
	docker *fakeDocker
	consul *fakeConsul
	rec    *Reconciler
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, opt Options, setup func(*fakeDocker, *fakeConsul)) *harness {
	t.Helper()
	h := &harness{t: t, docker: newFakeDocker(), consul: newFakeConsul(node), done: make(chan error, 1)}
	if setup != nil {
		setup(h.docker, h.consul)
	}
	opt.Policy.Node = node
	h.rec = New(h.docker, h.consul, opt)
	ctx, cancel := context.WithCancel(t.Context())
	h.cancel = cancel
	go func() { h.done <- h.rec.Run(ctx) }()
	t.Cleanup(h.stop)
	synctest.Wait()
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	if err := <-h.done; err != nil {
		h.t.Errorf("Run returned %v", err)
	}
}

func (h *harness) hint(id string) {
	h.docker.events <- container.Event{ContainerID: id}
	synctest.Wait()
}

func (h *harness) advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func (h *harness) wantIDs(want ...string) {
	h.t.Helper()
	got := h.consul.ids()
	if len(want) == 0 {
		want = nil
	}
	if len(got) == 0 {
		got = nil
	}
	if !reflect.DeepEqual(got, want) {
		h.t.Fatalf("consul holds %v, want %v", got, want)
	}
}

func TestStartupResync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Resync: time.Minute}, func(d *fakeDocker, c *fakeConsul) {
			d.set(ctr("a", 1001))
			d.set(ctr("b", 1002, exited(0)))
			// Ours, but the container is gone (died while we were down).
			c.services["stale"] = service.Service{ID: "stale", Meta: map[string]string{service.MetaNode: node, service.MetaContainerID: "gone"}}
			// Someone else's: never touched.
			c.services["theirs"] = service.Service{ID: "theirs", Meta: map[string]string{service.MetaNode: "other"}}
			c.services["manual"] = service.Service{ID: "manual"}
		})
		h.wantIDs("manual", sid("a"), "theirs")
		if !h.rec.Ready() {
			t.Error("not ready after a clean start-up resync")
		}
		s, _ := h.consul.get(sid("a"))
		if s.Address != "127.0.0.1" || s.Port != 1001 || s.Name != "webapp" {
			t.Errorf("registered %+v", s)
		}
	})
}

func TestEventRegistersAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{}, nil)
		h.docker.set(ctr("a", 1001))
		h.hint("a")
		h.wantIDs(sid("a")) // no time has passed: no debounce delay on the first hint
		h.docker.remove("a")
		h.hint("a")
		h.wantIDs(sid("a")) // inside the debounce window
		h.advance(50 * time.Millisecond)
		h.wantIDs()
	})
}

func TestDebounceFoldsBursts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Debounce: 100 * time.Millisecond}, nil)
		h.docker.set(ctr("a", 1001))
		h.hint("a")
		if n := h.docker.inspectCount("a"); n != 1 {
			t.Fatalf("%d inspects for the first hint, want 1 at once", n)
		}
		for range 10 {
			h.advance(5 * time.Millisecond)
			h.hint("a")
		}
		if n := h.docker.inspectCount("a"); n != 1 {
			t.Fatalf("%d inspects inside the window, want 1", n)
		}
		h.advance(49 * time.Millisecond)
		if n := h.docker.inspectCount("a"); n != 1 {
			t.Fatalf("%d inspects before the window ends", n)
		}
		h.advance(time.Millisecond)
		if n := h.docker.inspectCount("a"); n != 2 {
			t.Fatalf("%d inspects after the window, want 2", n)
		}
		h.advance(time.Second)
		if n := h.docker.inspectCount("a"); n != 2 {
			t.Fatalf("%d inspects when quiet, want 2", n)
		}
		h.wantIDs(sid("a"))
	})
}

func TestPeriodicResyncHealsMissedEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Resync: 30 * time.Second}, func(d *fakeDocker, _ *fakeConsul) {
			d.set(ctr("a", 1001))
		})
		h.wantIDs(sid("a"))
		// Changes without events (lost in a burst).
		h.docker.remove("a")
		h.docker.set(ctr("b", 1002))
		h.advance(30*time.Second - time.Millisecond)
		h.wantIDs(sid("a"))
		h.advance(time.Millisecond)
		h.wantIDs(sid("b"))
	})
}

func TestResyncDisabled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Resync: 0}, nil)
		h.docker.set(ctr("a", 1001))
		h.advance(time.Hour)
		h.wantIDs()
		// A reconnect still resyncs.
		h.docker.events <- container.Event{Resync: true}
		synctest.Wait()
		h.wantIDs(sid("a"))
	})
}

func TestUnchangedServicesAreNotRewritten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Resync: time.Second}, func(d *fakeDocker, _ *fakeConsul) {
			d.set(ctr("a", 1001))
			d.set(ctr("b", 1002))
		})
		w := h.consul.writeCount()
		h.advance(10 * time.Second) // ten resyncs
		h.hint("a")
		if got := h.consul.writeCount(); got != w {
			t.Fatalf("%d writes for nothing changed", got-w)
		}
		// A change of port is a change.
		h.docker.set(ctr("a", 2001))
		h.advance(time.Second)
		if s, _ := h.consul.get(sid("a")); s.Port != 2001 {
			t.Fatalf("port not updated: %+v", s)
		}
	})
}

func TestFailedWritesAreRetriedWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Resync: time.Hour, RetryMin: 100 * time.Millisecond, RetryMax: time.Second}, nil)
		h.consul.setFail(errDown)
		h.docker.set(ctr("a", 1001))
		h.hint("a")
		if h.rec.Ready() {
			t.Error("ready while Consul fails")
		}
		before := h.consul.writeCount()
		h.advance(10 * time.Second)
		tries := h.consul.writeCount() - before
		// 100ms, 200ms, 400ms, 800ms, then every 1s: about 13 in 10s, never
		// a tight loop, never given up.
		if tries < 8 || tries > 20 {
			t.Errorf("%d retries in 10s, want capped exponential backoff", tries)
		}
		h.consul.setFail(nil)
		h.advance(time.Second)
		h.wantIDs(sid("a"))
		if !h.rec.Ready() {
			t.Error("not ready after recovery")
		}
	})
}

func TestConsulRestartWithoutStateIsRefilled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Resync: 10 * time.Second}, func(d *fakeDocker, _ *fakeConsul) {
			for i := range 5 {
				d.set(ctr(fmt.Sprint(i), 1000+i))
			}
		})
		h.consul.wipe()
		h.advance(10 * time.Second)
		h.wantIDs(sid("0"), sid("1"), sid("2"), sid("3"), sid("4"))
	})
}

func TestOutageDuringEventTriggersEarlyResync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Resync: time.Hour, RetryMax: time.Second}, func(d *fakeDocker, _ *fakeConsul) {
			d.set(ctr("a", 1001))
		})
		// The agent restarts empty; we learn it from a failed write.
		h.consul.setFail(errDown)
		h.consul.wipe()
		h.docker.set(ctr("b", 1002))
		h.hint("b")
		h.consul.setFail(nil)
		h.advance(2 * time.Second)
		h.wantIDs(sid("a"), sid("b"))
	})
}

func TestRejectedServiceDoesNotBlockOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Resync: time.Hour}, func(d *fakeDocker, c *fakeConsul) {
			d.set(ctr("a", 1001))
			d.set(ctr("b", 1002))
			d.set(ctr("c", 1003))
			d.failInsp["c"] = fmt.Errorf("docker hiccup")
			c.reject[sid("a")] = true
		})
		h.wantIDs(sid("b"))
		if h.rec.Ready() {
			t.Error("ready with a rejected service")
		}
		h.docker.mu.Lock()
		delete(h.docker.failInsp, "c")
		h.docker.mu.Unlock()
		h.advance(time.Second)
		h.wantIDs(sid("b"), sid("c"))
	})
}

func TestDeregisterModes(t *testing.T) {
	tests := []struct {
		mode string
		exit int
		keep bool
	}{
		{DeregisterAlways, 0, false},
		{DeregisterAlways, 1, false},
		{DeregisterOnSuccess, 0, false},
		{DeregisterOnSuccess, 1, true},
		{DeregisterOnSuccess, 137, false}, // docker kill
		{DeregisterOnSuccess, 143, false}, // docker stop
		{DeregisterNever, 0, true},
		{DeregisterNever, 143, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/exit%d", tt.mode, tt.exit), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := start(t, Options{Deregister: tt.mode, Resync: time.Minute}, func(d *fakeDocker, _ *fakeConsul) {
					d.set(ctr("a", 1001))
				})
				h.docker.set(ctr("a", 1001, exited(tt.exit)))
				h.hint("a")
				h.advance(2 * time.Minute) // resyncs must agree
				if tt.keep {
					h.wantIDs(sid("a"))
				} else {
					h.wantIDs()
				}
				// Removal always deregisters.
				h.docker.remove("a")
				h.hint("a")
				h.advance(time.Second)
				h.wantIDs()
			})
		})
	}
}

func TestStoppedContainerKeptAcrossRestartOfRegistrar(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// on-success, container exited 1 while we were down: keep it.
		h := start(t, Options{Deregister: DeregisterOnSuccess}, func(d *fakeDocker, c *fakeConsul) {
			d.set(ctr("a", 1001, exited(1)))
			s := service.Service{ID: sid("a"), Meta: map[string]string{service.MetaNode: node, service.MetaContainerID: "a"}}
			c.services[s.ID] = s
		})
		h.wantIDs(sid("a"))
	})
}

func TestDuplicateServiceIDsAcrossContainers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		same := func(c *container.Container) { c.Labels = map[string]string{"SERVICE_ID": "dup"} }
		h := start(t, Options{Resync: time.Second}, func(d *fakeDocker, _ *fakeConsul) {
			d.set(ctr("b", 1002, same))
			d.set(ctr("a", 1001, same))
		})
		w := h.consul.writeCount()
		h.advance(5 * time.Second)
		if s, _ := h.consul.get("dup"); s.ContainerID != "a" || h.consul.writeCount() != w {
			t.Fatalf("winner %q, %d flapping writes", s.ContainerID, h.consul.writeCount()-w)
		}
		// The winner goes: the other takes over.
		h.docker.remove("a")
		h.hint("a")
		if s, _ := h.consul.get("dup"); s.ContainerID != "b" {
			t.Fatalf("after removal, owner %q", s.ContainerID)
		}
	})
}

func TestStartupFailureRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Resync: time.Hour, RetryMax: time.Second}, func(d *fakeDocker, c *fakeConsul) {
			d.set(ctr("a", 1001))
			c.fail = errDown
		})
		if h.rec.Ready() {
			t.Fatal("ready without Consul")
		}
		h.consul.setFail(nil)
		h.advance(time.Second)
		h.wantIDs(sid("a"))
		if !h.rec.Ready() {
			t.Fatal("not ready")
		}
	})
}

func TestDeregisterAll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{}, func(d *fakeDocker, c *fakeConsul) {
			d.set(ctr("a", 1001))
			d.set(ctr("b", 1002))
			c.services["theirs"] = service.Service{ID: "theirs", Meta: map[string]string{service.MetaNode: "other"}}
		})
		h.stop()
		if err := h.rec.DeregisterAll(t.Context()); err != nil {
			t.Fatal(err)
		}
		h.wantIDs("theirs")
	})
}

func TestBackoff(t *testing.T) {
	r := New(nil, nil, Options{RetryMin: 100 * time.Millisecond, RetryMax: time.Second})
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := r.backoff(i); got != w*time.Millisecond {
			t.Errorf("backoff(%d) = %v, want %v", i, got, w*time.Millisecond)
		}
	}
	if got := r.backoff(1000); got != time.Second {
		t.Errorf("backoff(1000) = %v", got)
	}
}
