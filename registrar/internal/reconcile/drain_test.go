package reconcile

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/switchyard/switchyard/registrar/internal/container"
	"github.com/switchyard/switchyard/registrar/internal/health"
	"github.com/switchyard/switchyard/registrar/internal/service"
)

func drainOn() Options {
	return Options{Policy: healthPolicy(health.Policy{Drain: true})}
}

func (h *harness) stopHint(id string) {
	h.docker.events <- container.Event{ContainerID: id, Drain: true}
	synctest.Wait()
}

func started(at time.Time) func(*container.Container) {
	return func(c *container.Container) { c.State.StartedAt = at }
}

func TestDrainOnStopUntilDie(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		run1 := time.Now()
		h := start(t, drainOn(), func(d *fakeDocker, _ *fakeConsul) { d.set(ctr("a", 1001, started(run1))) })
		h.wantIDs(sid("a"))
		// SIGTERM: the process still runs and serves, the service leaves
		// the rotation at once.
		h.stopHint("a")
		if !h.consul.inMaint(sid("a")) {
			t.Fatal("service not in maintenance right after the stop hint")
		}
		if st := h.rec.Status(); st.Draining != 1 {
			t.Errorf("status draining %d, want 1", st.Draining)
		}
		// Re-reads while it still runs (the same run) keep the drain.
		h.advance(time.Second)
		h.hint("a")
		if !h.consul.inMaint(sid("a")) {
			t.Fatal("a re-read of the same run ended the drain")
		}
		// die: the window ends with the service.
		h.docker.set(ctr("a", 1001, exited(143)))
		h.advance(time.Second)
		h.hint("a")
		h.wantIDs()
		if st := h.rec.Status(); st.Draining != 0 {
			t.Errorf("status draining %d after die, want 0", st.Draining)
		}
	})
}

func TestDrainEndsWhenContainerRunsAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		run1 := time.Now()
		h := start(t, drainOn(), func(d *fakeDocker, _ *fakeConsul) { d.set(ctr("a", 1001, started(run1))) })
		h.stopHint("a")
		if !h.consul.inMaint(sid("a")) {
			t.Fatal("not draining")
		}
		// SIGTERM ignored or a restart: a new run is back in rotation.
		h.advance(time.Second)
		h.docker.set(ctr("a", 1001, started(run1.Add(time.Second))))
		h.hint("a")
		if h.consul.inMaint(sid("a")) {
			t.Error("still in maintenance after the container runs again")
		}
	})
}

func TestDrainOffByLabelOrFlag(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, drainOn(), func(d *fakeDocker, _ *fakeConsul) {
			d.set(ctr("a", 1001, func(c *container.Container) { c.Labels = map[string]string{"SERVICE_DRAIN": "false"} }))
		})
		h.stopHint("a")
		if h.consul.inMaint(sid("a")) {
			t.Error("SERVICE_DRAIN=false drained")
		}
	})
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{}, func(d *fakeDocker, _ *fakeConsul) {
			d.set(ctr("a", 1001, func(c *container.Container) { c.Labels = map[string]string{"SERVICE_DRAIN": "true"} }))
			d.set(ctr("b", 1002))
		})
		h.stopHint("a")
		h.stopHint("b")
		if !h.consul.inMaint(sid("a")) || h.consul.inMaint(sid("b")) {
			t.Errorf("drain off by flag: a (SERVICE_DRAIN=true) %t, want true; b %t, want false", h.consul.inMaint(sid("a")), h.consul.inMaint(sid("b")))
		}
	})
}

func healthy(state string) func(*container.Container) {
	return func(c *container.Container) { c.State.Health = state }
}

func TestDockerHealthCheckFollowsDocker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opt := Options{Policy: healthPolicy(health.Policy{TTL: 30 * time.Second, DeregisterAfter: time.Minute})}
		h := start(t, opt, func(d *fakeDocker, _ *fakeConsul) { d.set(ctr("a", 1001, healthy(health.Starting))) })
		h.wantIDs(sid("a"))
		if st, _ := h.consul.checkStatus(sid("a")); st != health.Critical {
			t.Errorf("starting: check %q, want critical", st)
		}
		s, _ := h.consul.get(sid("a"))
		if ch, ok := s.DockerCheck(); !ok || ch.TTL != 30*time.Second || ch.DeregisterAfter != time.Minute {
			t.Errorf("docker check %+v, %t", ch, ok)
		}
		for _, tc := range []struct{ docker, want string }{
			{health.Healthy, health.Passing}, {health.Unhealthy, health.Critical}, {health.Healthy, health.Passing},
		} {
			h.advance(time.Second)
			h.docker.set(ctr("a", 1001, healthy(tc.docker)))
			h.hint("a") // health_status event
			if st, _ := h.consul.checkStatus(sid("a")); st != tc.want {
				t.Errorf("docker %s: check %q, want %q", tc.docker, st, tc.want)
			}
		}
		// Nothing changes, yet the TTL is refreshed before it expires.
		_, before := h.consul.checkStatus(sid("a"))
		h.advance(10 * time.Second)
		st, after := h.consul.checkStatus(sid("a"))
		if after <= before || st != health.Passing {
			t.Errorf("no TTL refresh within a third of the TTL: %d -> %d updates, status %q", before, after, st)
		}
	})
}

func TestWaitHealthyRegistersOnlyOnceHealthy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opt := Options{Policy: healthPolicy(health.Policy{WaitHealthy: true})}
		h := start(t, opt, func(d *fakeDocker, _ *fakeConsul) {
			d.set(ctr("a", 1001, healthy(health.Starting)))
			// Opted out per container: registered while starting.
			d.set(ctr("b", 1002, healthy(health.Starting), func(c *container.Container) {
				c.Labels = map[string]string{"SERVICE_WAIT_HEALTHY": "false", "SERVICE_HEALTH_STARTING": "warning"}
			}))
		})
		h.wantIDs(sid("b"))
		if st, _ := h.consul.checkStatus(sid("b")); st != health.Warning {
			t.Errorf("b starting: check %q, want warning (label)", st)
		}
		h.docker.set(ctr("a", 1001, healthy(health.Healthy)))
		h.hint("a")
		h.wantIDs(sid("a"), sid("b"))
		if st, _ := h.consul.checkStatus(sid("a")); st != health.Passing {
			t.Errorf("a healthy: check %q, want passing", st)
		}
	})
}

func healthPolicy(p health.Policy) service.Policy { return service.Policy{Health: p} }

// A drain whose maintenance call fails (the agent blinked) is retried with
// backoff until it is made, and the registrar is not ready meanwhile;
// before, it was logged and forgotten, leaving the stopping container in
// rotation for its whole grace period.
func TestFailedDrainIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opt := drainOn()
		opt.Resync, opt.RetryMin, opt.RetryMax = time.Hour, 100*time.Millisecond, time.Second
		h := start(t, opt, func(d *fakeDocker, _ *fakeConsul) { d.set(ctr("a", 1001, started(time.Now()))) })
		h.wantIDs(sid("a"))
		h.consul.setFailMaint(errDown)
		h.stopHint("a")
		if h.consul.inMaint(sid("a")) {
			t.Fatal("in maintenance although the call failed")
		}
		st := h.rec.Status()
		if st.Ready || !strings.Contains(st.Reason, "maintenance change for container") || st.RetriesPending != 1 {
			t.Errorf("after a failed drain: ready %t, reason %q, retries pending %d; want not ready, naming the maintenance change", st.Ready, st.Reason, st.RetriesPending)
		}
		// Backoff, not a tight loop: 100ms, 200ms, 400ms, 800ms, then 1s.
		before := h.consul.maintCallCount()
		h.advance(5 * time.Second)
		if tries := h.consul.maintCallCount() - before; tries < 4 || tries > 9 {
			t.Errorf("%d maintenance retries in 5s, want capped exponential backoff", tries)
		}
		h.consul.setFailMaint(nil)
		h.advance(2 * time.Second)
		if !h.consul.inMaint(sid("a")) {
			t.Fatal("failed drain never retried: service still in rotation")
		}
		if st := h.rec.Status(); !st.Ready || st.Draining != 1 {
			t.Errorf("after the retry: ready %t (%s), draining %d; want ready, 1", st.Ready, st.Reason, st.Draining)
		}
	})
}

// The end of a drain (the container runs again) is retried too: a failed
// undrain would keep a running container out of rotation.
func TestFailedUndrainIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		run1 := time.Now()
		opt := drainOn()
		opt.Resync, opt.RetryMax = time.Hour, time.Second
		h := start(t, opt, func(d *fakeDocker, _ *fakeConsul) { d.set(ctr("a", 1001, started(run1))) })
		h.stopHint("a")
		h.consul.setFailMaint(errDown)
		h.advance(time.Second)
		h.docker.set(ctr("a", 1001, started(run1.Add(time.Second))))
		h.hint("a")
		if !h.consul.inMaint(sid("a")) {
			t.Fatal("undrain made although the call failed")
		}
		h.consul.setFailMaint(nil)
		h.advance(2 * time.Second)
		if h.consul.inMaint(sid("a")) {
			t.Fatal("failed undrain never retried: running container out of rotation")
		}
	})
}

// A draining container's service registered anew (the agent restarted
// without its state during the drain) goes back into maintenance.
func TestDrainSurvivesAgentRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opt := drainOn()
		opt.Resync = 10 * time.Second
		h := start(t, opt, func(d *fakeDocker, _ *fakeConsul) { d.set(ctr("a", 1001, started(time.Now()))) })
		h.stopHint("a")
		h.consul.wipe()
		h.advance(10 * time.Second) // the resync registers it again
		h.wantIDs(sid("a"))
		if !h.consul.inMaint(sid("a")) {
			t.Fatal("re-registered during its drain, the service is back in rotation")
		}
	})
}
