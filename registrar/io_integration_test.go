package main

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// Real Docker (behind a socket that can hang or fail one container's
// inspect) and a real Consul: I/O that never hangs.

func statusAddr(t *testing.T) string { return freeAddr(t) }

// One container's inspect hangs (dockerd's known lock-up): /ready must say
// so within the stall bound, the loop must go on with other containers
// after the I/O timeout, and the hung container keeps its service.
func TestHungInspectDoesNotStopTheLoop(t *testing.T) {
	r := newRig(t)
	fd := startFaultyDocker(t)
	status := statusAddr(t)
	r.startEnv([]string{"DOCKER_HOST=" + fd.Host}, "-resync", "1", "--io-timeout", "3s", "--stall-timeout", "1s", "--status-addr", status)
	nameA, nameB := testenv.RandomName("sy-it-hung"), testenv.RandomName("sy-it-other")
	a := r.run(testenv.RunOptions{Name: nameA, Ports: []string{"8080"}})
	idA, idB := r.node+":"+nameA+":8080", r.node+":"+nameB+":8080"
	r.waitService(idA, nil)
	waitReady(t, status, true, "")

	fd.set(a.ID, "hang")
	waitReady(t, status, false, "stalled") // the next resync is stuck on a
	r.run(testenv.RunOptions{Name: nameB, Ports: []string{"8080"}})
	r.waitService(idB, nil) // the inspect timed out; the loop went on
	waitReady(t, status, false, "inspect .*retry|stalled")
	if !r.has(idA) {
		t.Fatal("the service of the container whose inspect hangs was removed")
	}

	fd.set(a.ID, "")
	waitReady(t, status, true, "")
	if !r.has(idA) || !r.has(idB) {
		t.Fatal("services lost after the engine recovered")
	}
}

// Unknown is not absent: a running container whose inspect fails when the
// registrar starts keeps its services, and /ready says a retry is pending.
func TestInspectFailureAtStartupKeepsServices(t *testing.T) {
	r := newRig(t)
	fd := startFaultyDocker(t)
	env := []string{"DOCKER_HOST=" + fd.Host}
	name := testenv.RandomName("sy-it-flaky")
	ctr := r.run(testenv.RunOptions{Name: name, Ports: []string{"8080"}})
	id := r.node + ":" + name + ":8080"
	p := r.startEnv(env)
	r.waitService(id, nil)
	p.KillGroup()

	fd.set(ctr.ID, "fail")
	status := statusAddr(t)
	r.startEnv(env, "--status-addr", status)
	// /ready reports the pending retry once the start-up resync is done,
	// and that resync would have removed the service.
	waitReady(t, status, false, "inspect .*retry")
	if !r.has(id) {
		t.Fatal("a failed inspect at start-up deregistered a running container's service")
	}
	fd.set(ctr.ID, "")
	waitReady(t, status, true, "")
	if !r.has(id) {
		t.Fatal("service gone after the retry")
	}
}

// A hand-registered service whose ID a container claims (SERVICE_ID=vault)
// is never overwritten, nor removed when the container goes; /status names
// the refusal; other containers are registered as usual.
func TestForeignServiceIDIsNeverTakenOver(t *testing.T) {
	r := newRig(t)
	vault := testenv.RandomName("vault")
	agent := r.consul.Client.Agent()
	if err := agent.ServiceRegister(&api.AgentServiceRegistration{ID: vault, Name: "vault", Port: 8200}); err != nil {
		t.Fatal(err)
	}
	status := statusAddr(t)
	r.start("-resync", "1", "--status-addr", status)
	claim := r.run(testenv.RunOptions{Labels: map[string]string{"SERVICE_ID": vault, "SERVICE_NAME": "vault"}, Ports: []string{"8080"}})
	other := testenv.RandomName("sy-it-web")
	r.run(testenv.RunOptions{Name: other, Ports: []string{"8080"}})
	r.waitService(r.node+":"+other+":8080", nil)

	testenv.Eventually(t, 15*time.Second, func() error {
		st, err := getStatus(status)
		if err != nil {
			return err
		}
		if len(st.Refused) != 1 || st.Refused[0].ServiceID != vault || st.Refused[0].ContainerID != claim.ID || st.TakeoversRefused != 1 {
			return fmt.Errorf("refused %+v, takeovers_refused %d", st.Refused, st.TakeoversRefused)
		}
		return nil
	})
	checkVault := func() {
		t.Helper()
		s, _, err := agent.Service(vault, nil)
		if err != nil {
			t.Fatalf("hand-registered service gone: %v", err)
		}
		if s.Port != 8200 || len(s.Meta) != 0 {
			t.Fatalf("hand-registered service taken over: port %d meta %v", s.Port, s.Meta)
		}
	}
	checkVault()

	testenv.RemoveContainer(testenv.Docker(t), claim.ID)
	gone := time.Now()
	testenv.Eventually(t, 15*time.Second, func() error {
		st, err := getStatus(status)
		if err != nil {
			return err
		}
		if len(st.Refused) != 0 || st.LastResync == nil || !st.LastResync.After(gone) {
			return fmt.Errorf("refused %+v, last resync %v (container removed at %v)", st.Refused, st.LastResync, gone)
		}
		return nil
	})
	checkVault()
}

// A --status-addr that cannot be bound stops the registrar before it
// touches Consul (here: it would remove a stale service, and with
// --on-shutdown=deregister everything it owns), with the usage exit code.
func TestStatusAddrInUseTouchesNothing(t *testing.T) {
	r := newRig(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	stale := &api.AgentServiceRegistration{ID: r.node + ":gone:8080", Name: "stale", Port: 2,
		Meta: map[string]string{"registrar-node": r.node, "container-id": "0123456789ab"}}
	if err := r.consul.Client.Agent().ServiceRegister(stale); err != nil {
		t.Fatal(err)
	}
	p := r.start("--on-shutdown=deregister", "--status-addr", l.Addr().String())
	code, err := p.Wait(15 * time.Second)
	if err != nil || code != 2 {
		t.Fatalf("exit %d, %v; want 2 (usage)", code, err)
	}
	if !r.has(stale.ID) {
		t.Fatal("an owned service was removed although the registrar could not start")
	}
}
