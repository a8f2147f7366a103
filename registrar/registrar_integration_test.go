package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"
	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// These tests run the real binary against a real Consul agent and the real
// Docker Engine. Containers publish on 127.0.0.1 only.

type rig struct {
	t      *testing.T
	consul *testenv.Consul
	bin    string
	node   string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test")
	}
	testenv.Docker(t)
	return &rig{
		t:      t,
		consul: testenv.StartConsul(t),
		bin:    testenv.BuildBinary(t, "github.com/switchyard/switchyard/registrar"),
		node:   testenv.RandomName("it-node"),
	}
}

// start runs registrar with registrator-style single-dash flags and the
// positional URI.
func (r *rig) start(extra ...string) *testenv.Process { return r.startEnv(nil, extra...) }

// startEnv is start with extra environment (DOCKER_HOST=...).
func (r *rig) startEnv(env []string, extra ...string) *testenv.Process {
	args := append([]string{"-node-name", r.node, "-retry-interval", "100", "-log-level", "debug", "-label-filter", r.scope()}, extra...)
	args = append(args, "consul://"+r.consul.Addr)
	return testenv.StartProcess(r.t, "registrar", r.bin, args, env...)
}

// scopeLabel marks the containers of one rig. The Docker engine is shared
// with the other packages' tests, running at the same time: the rig's
// registrar registers only its own test's containers (--label-filter), so
// its counts, /status and metrics are exact.
const scopeLabel = "switchyard.test.scope"

// scope is the rig's --label-filter value.
func (r *rig) scope() string { return scopeLabel + "=" + r.node }

// run starts a container of this rig's test (see scopeLabel).
func (r *rig) run(o testenv.RunOptions) *docker.Container {
	r.t.Helper()
	o.Labels = r.labels(o.Labels)
	return testenv.RunContainer(r.t, o)
}

// labels returns labels with the rig's scope label added.
func (r *rig) labels(labels map[string]string) map[string]string {
	out := map[string]string{scopeLabel: r.node}
	for k, v := range labels {
		out[k] = v
	}
	return out
}

// has reports, now, whether the service is registered and ours.
func (r *rig) has(id string) bool {
	r.t.Helper()
	svcs, err := r.owned()
	if err != nil {
		r.t.Fatal(err)
	}
	_, ok := svcs[id]
	return ok
}

// owned returns the agent's services owned by this rig's node.
func (r *rig) owned() (map[string]*api.AgentService, error) {
	return r.consul.Client.Agent().ServicesWithFilter(fmt.Sprintf("Meta[%q] == %q", "registrar-node", r.node))
}

func (r *rig) waitService(id string, check func(*api.AgentService) error) {
	r.t.Helper()
	testenv.Eventually(r.t, 15*time.Second, func() error {
		svcs, err := r.owned()
		if err != nil {
			return err
		}
		s, ok := svcs[id]
		if !ok {
			return fmt.Errorf("service %s not registered (have %d)", id, len(svcs))
		}
		if check != nil {
			return check(s)
		}
		return nil
	})
}

func (r *rig) waitGone(id string) {
	r.t.Helper()
	testenv.Eventually(r.t, 15*time.Second, func() error {
		svcs, err := r.owned()
		if err != nil {
			return err
		}
		if _, ok := svcs[id]; ok {
			return fmt.Errorf("service %s still registered", id)
		}
		return nil
	})
}

func (r *rig) waitCount(n int) {
	r.t.Helper()
	testenv.Eventually(r.t, 30*time.Second, func() error {
		svcs, err := r.owned()
		if err != nil {
			return err
		}
		if len(svcs) != n {
			return fmt.Errorf("%d services owned, want %d", len(svcs), n)
		}
		return nil
	})
}

func TestWalkingSkeleton(t *testing.T) {
	r := newRig(t)
	status := statusAddr(t)
	r.start("--status-addr", status)
	waitReady(t, status, true, "") // the event stream is up: the start below is an event
	name := testenv.RandomName("sy-it-web")
	ctr := r.run(testenv.RunOptions{
		Name:   name,
		Labels: map[string]string{"SERVICE_NAME": name, "SERVICE_CHECK_HTTP": "/health", "SERVICE_CHECK_INTERVAL": "1s", "SERVICE_TAGS": "b,a"},
		Ports:  []string{"8080"},
	})
	port, _ := strconv.Atoi(testenv.HostPort(ctr, "8080"))
	id := r.node + ":" + name + ":8080"
	r.waitService(id, func(s *api.AgentService) error {
		if s.Service != name || s.Address != "127.0.0.1" || s.Port != port {
			return fmt.Errorf("registered %s %s:%d, want %s 127.0.0.1:%d", s.Service, s.Address, s.Port, name, port)
		}
		if s.Meta["container-id"] != ctr.ID {
			return fmt.Errorf("meta %v", s.Meta)
		}
		if fmt.Sprint(s.Tags) != "[b a]" {
			return fmt.Errorf("tags %v", s.Tags)
		}
		return nil
	})
	// The agent runs the HTTP check against 127.0.0.1:<port>/health.
	testenv.Eventually(t, 15*time.Second, func() error {
		entries, err := r.consul.Services(context.Background(), name, true)
		if err != nil {
			return err
		}
		if len(entries) != 1 {
			return errors.New("no passing instance yet")
		}
		return nil
	})

	// /metrics counted the container's start event and the registration
	// it caused.
	testenv.Eventually(t, 10*time.Second, func() error {
		fams, err := fetchMetrics("http://" + status)
		if err != nil {
			return err
		}
		starts, _ := sample(fams, "events_total", "type", "start")
		byEvent, _ := sample(fams, "registrations_total", "reason", "event")
		services, _ := sample(fams, "services")
		if starts < 1 || byEvent < 1 || services != 1 {
			return fmt.Errorf("events_total{type=start} %v, registrations_total{reason=event} %v, services %v; want >= 1, >= 1, 1", starts, byEvent, services)
		}
		return nil
	})

	// die -> deregistered.
	if err := testenv.Docker(t).StopContainer(ctr.ID, 5); err != nil {
		t.Fatal(err)
	}
	r.waitGone(id)
}

func TestStateSurvivesConsulRestartAndRegistrarKill(t *testing.T) {
	r := newRig(t)
	p := r.start("-resync", "2")
	var ids []string
	for i := range 3 {
		name := testenv.RandomName(fmt.Sprintf("sy-it-%d", i))
		r.run(testenv.RunOptions{Name: name, Labels: map[string]string{"SERVICE_NAME": "it-app"}, Ports: []string{"8080"}})
		ids = append(ids, r.node+":"+name+":8080")
	}
	// Not ours: must never be touched.
	if err := r.consul.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "manual", Name: "manual", Port: 1}); err != nil {
		t.Fatal(err)
	}
	r.waitCount(3)

	// The agent comes back with no state: the next resync re-registers.
	r.consul.Restart(t)
	if err := r.consul.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "manual", Name: "manual", Port: 1}); err != nil {
		t.Fatal(err)
	}
	r.waitCount(3)

	// kill -9 the registrar; a container dies meanwhile; a new registrar
	// (same node name) removes its service at start-up.
	p.KillGroup()
	dead := testenv.RandomName("sy-it-dead")
	dctr := r.run(testenv.RunOptions{Name: dead, Ports: []string{"8080"}})
	// Registered by nobody yet; pretend a previous incarnation owned it and
	// then the container went away.
	stale := &api.AgentServiceRegistration{ID: r.node + ":" + dead + ":8080", Name: "stale", Port: 2,
		Meta: map[string]string{"registrar-node": r.node, "container-id": dctr.ID}}
	if err := r.consul.Client.Agent().ServiceRegister(stale); err != nil {
		t.Fatal(err)
	}
	testenv.RemoveContainer(testenv.Docker(t), dctr.ID)
	r.start("-resync", "2")
	r.waitCount(3)
	for _, id := range ids {
		r.waitService(id, nil)
	}
	svcs, err := r.consul.Client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs["manual"]; !ok {
		t.Fatal("a service registrar does not own was removed")
	}
}

func TestOnShutdownDeregister(t *testing.T) {
	r := newRig(t)
	p := r.start("--on-shutdown=deregister")
	name := testenv.RandomName("sy-it-sd")
	r.run(testenv.RunOptions{Name: name, Ports: []string{"8080"}})
	r.waitCount(1)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(15 * time.Second); err != nil || code != 0 {
		t.Fatalf("exit %d, %v", code, err)
	}
	r.waitCount(0)
}

func TestOnShutdownKeepIsDefault(t *testing.T) {
	r := newRig(t)
	p := r.start()
	r.run(testenv.RunOptions{Ports: []string{"8080"}})
	r.waitCount(1)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(15 * time.Second); err != nil || code != 0 {
		t.Fatalf("exit %d, %v", code, err)
	}
	svcs, err := r.owned()
	if err != nil || len(svcs) != 1 {
		t.Fatalf("after SIGTERM with keep: %d services, %v", len(svcs), err)
	}
}

func TestBurstOfContainers(t *testing.T) {
	r := newRig(t)
	r.start("-resync", "0") // events alone must be enough
	const n = 20
	d := testenv.Docker(t)
	img := testenv.WebappImage(t)
	errs := make(chan error, n)
	ids := make(chan string, n)
	// go-dockerclient sets its server API version lazily, racing when the
	// first StartContainer calls of a client run concurrently: start one
	// alone first.
	for i := range n {
		run := func() {
			ctr, err := testenv.StartContainer(d, testenv.RunOptions{Name: testenv.RandomName(fmt.Sprintf("sy-it-burst%d", i)), Image: img, Ports: []string{"8080"}, Labels: r.labels(nil)})
			if ctr != nil {
				ids <- ctr.ID
			}
			errs <- err
		}
		if i == 0 {
			run()
		} else {
			go run()
		}
	}
	var started []string
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	close(ids)
	for id := range ids {
		started = append(started, id)
	}
	t.Cleanup(func() {
		for _, id := range started {
			testenv.RemoveContainer(d, id)
		}
	})
	if t.Failed() {
		return
	}
	r.waitCount(n)
	for _, id := range started {
		testenv.RemoveContainer(d, id)
	}
	r.waitCount(0)
}

// --label-filter against the real engine: a container without the label
// gets no service, through events and through resyncs, while one with it
// does.
func TestLabelFilterOnTheEngine(t *testing.T) {
	r := newRig(t)
	status := statusAddr(t)
	r.start("-resync", "1", "--status-addr", status)
	other := testenv.RandomName("sy-it-unscoped")
	testenv.RunContainer(t, testenv.RunOptions{Name: other, Labels: map[string]string{"SERVICE_NAME": "unscoped"}, Ports: []string{"8080"}})
	mine := testenv.RandomName("sy-it-scoped")
	r.run(testenv.RunOptions{Name: mine, Ports: []string{"8080"}})
	r.waitService(r.node+":"+mine+":8080", nil)
	// Two resyncs later, still only ours.
	fams, err := fetchMetrics("http://" + status)
	if err != nil {
		t.Fatal(err)
	}
	resyncs, _ := sample(fams, "resyncs_total", "result", "ok")
	testenv.Eventually(t, 10*time.Second, func() error {
		fams, err := fetchMetrics("http://" + status)
		if err != nil {
			return err
		}
		if n, _ := sample(fams, "resyncs_total", "result", "ok"); n < resyncs+2 {
			return fmt.Errorf("%v resyncs since the scoped service registered, want 2", n-resyncs)
		}
		return nil
	})
	if r.has(r.node + ":" + other + ":8080") {
		t.Fatalf("%s has no %s label and was registered", other, scopeLabel)
	}
	r.waitCount(1)
}
