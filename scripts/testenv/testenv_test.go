package testenv_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// TestConsulRestartLosesState proves the helper gives a real agent and that
// Restart is the "agent restarted with its data wiped" case later tests rely on.
func TestConsulRestartLosesState(t *testing.T) {
	c := testenv.StartConsul(t)
	reg := &api.AgentServiceRegistration{ID: "probe-1", Name: "probe", Port: 1, Address: "127.0.0.1"}
	if err := c.Client.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("register: %v", err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		got, err := c.Services(context.Background(), "probe", false)
		if err != nil || len(got) != 1 {
			return fmt.Errorf("want 1 probe instance, got %d (%v)", len(got), err)
		}
		return nil
	})
	c.Restart(t)
	got, err := c.Services(context.Background(), "probe", false)
	if err != nil || len(got) != 0 {
		t.Fatalf("after restart: want no probe instance, got %d (%v)", len(got), err)
	}
}

// TestFixtureContainerServesOnLoopback proves the FROM scratch image builds
// and answers on its published 127.0.0.1 port with its instance name.
func TestFixtureContainerServesOnLoopback(t *testing.T) {
	ctr := testenv.RunContainer(t, testenv.RunOptions{Env: map[string]string{"NAME": "fixture-a"}, Ports: []string{"8080"}})
	port := testenv.HostPort(ctr, "8080")
	if port == "" {
		t.Fatalf("no 127.0.0.1 binding for 8080/tcp in %+v", ctr.NetworkSettings.Ports)
	}
	var body string
	testenv.Eventually(t, 10*time.Second, func() error {
		resp, err := http.Get("http://127.0.0.1:" + port + "/x")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err
	})
	if !strings.Contains(body, "hello from fixture-a") {
		t.Fatalf("unexpected body %q", body)
	}
}
