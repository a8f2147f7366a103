package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	docker "github.com/fsouza/go-dockerclient"
	"github.com/switchyard/switchyard/scripts/testenv"
)

// checkStatus returns the status of a check of the local agent, "" when
// there is none.
func (r *rig) checkStatus(id string) (string, error) {
	checks, err := r.consul.Client.Agent().Checks()
	if err != nil {
		return "", err
	}
	if c, ok := checks[id]; ok {
		return c.Status, nil
	}
	return "", nil
}

func (r *rig) waitCheck(id, want string) {
	r.t.Helper()
	testenv.Eventually(r.t, 20*time.Second, func() error {
		got, err := r.checkStatus(id)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("check %s is %q, want %q", id, got, want)
		}
		return nil
	})
}

func setHealth(t *testing.T, port string, ok bool) {
	t.Helper()
	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%s/health?ok=%t", port, ok), "text/plain", bytes.NewReader(nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// A Docker HEALTHCHECK becomes a Consul TTL check that follows Docker:
// healthy -> passing, unhealthy -> critical, and it is right again after a
// registrar restart.
func TestDockerHealthcheckFollowedInConsul(t *testing.T) {
	r := newRig(t)
	p := r.start("-health-ttl", "3s", "-wait-healthy")
	name := testenv.RandomName("sy-it-health")
	ctr := r.run(testenv.RunOptions{
		Name: name, Labels: map[string]string{"SERVICE_NAME": name}, Ports: []string{"8080"},
		Healthcheck: testenv.ProbeHealthcheck(300 * time.Millisecond),
	})
	id := r.node + ":" + name + ":8080"
	check := "service:" + id + ":docker"
	r.waitCheck(check, api.HealthPassing)
	port := testenv.HostPort(ctr, "8080")

	setHealth(t, port, false)
	r.waitCheck(check, api.HealthCritical)
	setHealth(t, port, true)
	r.waitCheck(check, api.HealthPassing)

	// Refreshed: still passing after more than its TTL.
	time.Sleep(4 * time.Second)
	if st, err := r.checkStatus(check); err != nil || st != api.HealthPassing {
		t.Fatalf("after the TTL: check %q, %v; want passing (refreshed)", st, err)
	}

	// Changed while the registrar is down: right after it starts again.
	p.Stop(10 * time.Second)
	setHealth(t, port, false)
	testenv.Eventually(t, 10*time.Second, func() error { // Docker's probe notices
		c, err := testenv.Docker(t).InspectContainerWithOptions(docker.InspectContainerOptions{ID: ctr.ID})
		if err != nil {
			return err
		}
		if c.State.Health.Status != "unhealthy" {
			return fmt.Errorf("Docker says %q, want unhealthy", c.State.Health.Status)
		}
		return nil
	})
	r.start("-health-ttl", "3s")
	r.waitCheck(check, api.HealthCritical)
}

// `registrar drain` puts every service of the host into maintenance,
// `registrar undrain` takes them out.
func TestDrainAndUndrainSubcommands(t *testing.T) {
	r := newRig(t)
	r.start()
	name := testenv.RandomName("sy-it-hostdrain")
	r.run(testenv.RunOptions{Name: name, Labels: map[string]string{"SERVICE_NAME": name}, Ports: []string{"8080"}})
	id := r.node + ":" + name + ":8080"
	r.waitService(id, nil)
	maint := "_service_maintenance:" + id
	for _, tc := range []struct {
		cmd  string
		want string
	}{{"drain", api.HealthCritical}, {"undrain", ""}} {
		var stderr bytes.Buffer
		args := []string{"registrar", tc.cmd, "--node-name", r.node, "consul://" + r.consul.Addr}
		if err := newApp(&stderr, run).RunContext(context.Background(), args); err != nil {
			t.Fatalf("%s: %v\n%s", tc.cmd, err, stderr.String())
		}
		if st, err := r.checkStatus(maint); err != nil || st != tc.want {
			t.Errorf("after %s: maintenance check %q, %v; want %q", tc.cmd, st, err, tc.want)
		}
	}
}

// docker stop: the service goes into maintenance while the container still
// runs (WEBAPP_DRAIN keeps it serving), and is gone once it died.
func TestDockerStopDrainsBeforeDie(t *testing.T) {
	r := newRig(t)
	r.start()
	name := testenv.RandomName("sy-it-drain")
	ctr := r.run(testenv.RunOptions{
		Name: name, Labels: map[string]string{"SERVICE_NAME": name}, Ports: []string{"8080"},
		Env: map[string]string{"WEBAPP_DRAIN": "3s"},
	})
	id := r.node + ":" + name + ":8080"
	r.waitService(id, nil)
	waitServing(t, ctr)
	stopped := make(chan error, 1)
	go func() { stopped <- testenv.Docker(t).StopContainer(ctr.ID, 10) }()
	r.waitCheck("_service_maintenance:"+id, api.HealthCritical)
	if c, err := testenv.Docker(t).InspectContainer(ctr.ID); err != nil || !c.State.Running {
		t.Fatalf("drain came after the container stopped running (%v)", err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	r.waitGone(id)
}
