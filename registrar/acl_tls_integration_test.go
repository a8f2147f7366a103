package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"
	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// The registrar against a Consul agent with ACLs (default deny) or TLS
// (client certificates required), and its drains across re-registrations.

const (
	managementToken = "5e1ec7ed-0000-4000-8000-000000000001"
	// wrongToken is well-formed but unknown to the agent.
	wrongToken = "0badbad0-1111-4222-8333-444455556666"
	// code403 starts consul/api's text for a refusal; a port or a
	// container ID may contain "403", this may not.
	code403 = "Unexpected response code: 403"
)

// runOnNetwork is rig.run on a network of its own: the
// default bridge (docker0) is shared with every test on the host, and an
// engine started with --bridge=none deletes it.
func (r *rig) runOnNetwork(o testenv.RunOptions) *docker.Container {
	r.t.Helper()
	o.Network = testenv.CreateNetwork(r.t).Name
	return r.run(o)
}

// waitServing waits until the container's app answers on port 8080. Its
// SIGTERM handler is in place from then on: a signal that came before
// would kill it at once instead of starting its drain window.
func waitServing(t *testing.T, ctr *docker.Container) {
	t.Helper()
	url := "http://127.0.0.1:" + testenv.HostPort(ctr, "8080") + "/"
	testenv.Eventually(t, 15*time.Second, func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
}

// sigterm sends the container docker stop's SIGTERM once its app serves.
func sigterm(t *testing.T, ctr *docker.Container) {
	t.Helper()
	waitServing(t, ctr)
	if err := testenv.Docker(t).KillContainer(docker.KillContainerOptions{ID: ctr.ID, Signal: docker.SIGTERM}); err != nil {
		t.Fatal(err)
	}
}

// newSecureRig is newRig on an agent with ACLs and/or TLS.
func newSecureRig(t *testing.T, opt testenv.SecureOptions) (*rig, *testenv.SecureConsul) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test")
	}
	testenv.Docker(t)
	sc := testenv.StartSecureConsul(t, opt)
	return &rig{
		t:      t,
		consul: sc.Consul,
		bin:    testenv.BuildBinary(t, "github.com/switchyard/switchyard/registrar"),
		node:   testenv.RandomName("it-node"),
	}, sc
}

// newACLRig is newSecureRig with ACLs on and default deny, as in
// production: whatever the registrar's token lacks is refused.
func newACLRig(t *testing.T) (*rig, *testenv.SecureConsul) {
	t.Helper()
	return newSecureRig(t, testenv.SecureOptions{ACLToken: managementToken})
}

// startWithStatus starts the registrar with a status server, through which
// the tests watch it (/ready, /status, /metrics), and returns its address.
func (r *rig) startWithStatus(args ...string) (*testenv.Process, string) {
	r.t.Helper()
	status := statusAddr(r.t)
	return r.start(append(args, "--status-addr", status)...), status
}

// startWithTokenFile starts the registrar with --consul-token-file holding
// token, and returns the file for the test to rewrite as a secret manager
// would. -resync 1 makes a Consul call, and so a new token, come soon.
func (r *rig) startWithTokenFile(token string) (p *testenv.Process, status, file string) {
	r.t.Helper()
	file = filepath.Join(r.t.TempDir(), "token")
	testenv.WriteTokenFile(r.t, file, token)
	p, status = r.startWithStatus("-resync", "1", "--consul-token-file", file)
	return p, status, file
}

// consulErrors reads switchyard_registrar_consul_errors_total.
func consulErrors(status string) (float64, error) {
	fams, err := fetchMetrics("http://" + status)
	if err != nil {
		return 0, err
	}
	n, _ := sample(fams, "consul_errors_total")
	return n, nil
}

// waitMoreErrors waits until the Consul error count passes from+n: the
// registrar keeps retrying.
func waitMoreErrors(t *testing.T, status string, from float64, n int) float64 {
	t.Helper()
	var got float64
	testenv.Eventually(t, 20*time.Second, func() (err error) {
		if got, err = consulErrors(status); err != nil {
			return err
		}
		if got < from+float64(n) {
			return fmt.Errorf("consul_errors_total %v, want at least %v", got, from+float64(n))
		}
		return nil
	})
	return got
}

// noSecret fails if any token shows in the registrar's log or on any page
// of its status server.
func noSecret(t *testing.T, p *testenv.Process, status string, tokens ...string) {
	t.Helper()
	texts := map[string]string{"log": p.Log()}
	for _, page := range []string{"/ready", "/status", "/metrics"} {
		resp, err := http.Get("http://" + status + page)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		texts[page] = string(b)
	}
	for where, text := range texts {
		for _, tok := range tokens {
			if strings.Contains(text, tok) {
				t.Errorf("the token %s… shows in the %s", tok[:8], where)
			}
		}
	}
}

// serviceID is the ID the registrar gives port 8080 of container name.
func (r *rig) serviceID(name string) string { return r.node + ":" + name + ":8080" }

// maintenanceCheck is the check the agent adds to service id while it is
// in maintenance: critical there means draining.
func maintenanceCheck(id string) string { return "_service_maintenance:" + id }

// waitDraining waits until service id is in maintenance.
func (r *rig) waitDraining(id string) {
	r.t.Helper()
	r.waitCheck(maintenanceCheck(id), api.HealthCritical)
}

// beginDrain sends the container docker stop's SIGTERM and waits until its
// service id is in maintenance: its drain window has begun.
func (r *rig) beginDrain(ctr *docker.Container, id string) {
	r.t.Helper()
	sigterm(r.t, ctr)
	r.waitDraining(id)
}

// waitPassing waits until the catalog, which renderers read, has n
// passing instances of name: the agent synced what the registrar wrote.
func (r *rig) waitPassing(name string, n int) {
	r.t.Helper()
	testenv.Eventually(r.t, 20*time.Second, func() error {
		entries, err := r.consul.Services(context.Background(), name, true)
		if err != nil {
			return err
		}
		if len(entries) != n {
			return fmt.Errorf("catalog has %d passing %s, want %d", len(entries), name, n)
		}
		return nil
	})
}

// With a token of exactly the documented policy the registrar registers,
// drains and deregisters, all the way to the catalog.
func TestACLLeastPrivilegePolicy(t *testing.T) {
	r, sc := newACLRig(t)
	secret, _ := sc.CreateRegistrarToken(t, "registrar")
	p, status, _ := r.startWithTokenFile(secret)
	waitReady(t, status, true, "")
	name := testenv.RandomName("sy-it-acl")
	ctr := r.runOnNetwork(testenv.RunOptions{
		Name: name, Labels: map[string]string{"SERVICE_NAME": name, "SERVICE_CHECK_TCP": "true", "SERVICE_CHECK_INTERVAL": "1s"},
		Ports: []string{"8080"}, Env: map[string]string{"WEBAPP_DRAIN": "30s"},
		Healthcheck: testenv.ProbeHealthcheck(300 * time.Millisecond),
	})
	id := r.serviceID(name)
	r.waitCheck("service:"+id+":docker", api.HealthPassing) // a TTL update
	r.waitPassing(name, 1)                                  // synced to the catalog

	// docker stop's SIGTERM: maintenance, then the catalog drops it.
	r.beginDrain(ctr, id)
	r.waitPassing(name, 0)
	testenv.RemoveContainer(testenv.Docker(t), ctr.ID)
	r.waitGone(id)
	if n, err := consulErrors(status); err != nil || n != 0 {
		t.Errorf("consul_errors_total %v, %v; want 0 with the documented policy", n, err)
	}
	noSecret(t, p, status, secret)
}

// A wrong token, then a revoked one: the registrar says 403 on /ready and
// in consul_errors_total, logs one line per attempt (as many as the
// counter), keeps retrying, and recovers as soon as the token file holds a
// good token, without a restart. No token ever shows.
func TestACLWrongOrRevokedTokenRetriesAndRecovers(t *testing.T) {
	r, sc := newACLRig(t)
	secret, accessor := sc.CreateRegistrarToken(t, "registrar")
	p, status, file := r.startWithTokenFile(wrongToken)

	// Start-up: the agent refuses the token.
	waitReady(t, status, false, "waiting for consul.*403.*ACL not found.*--consul-token-file")
	waitMoreErrors(t, status, 0, 3)
	testenv.WriteTokenFile(t, file, secret)
	waitReady(t, status, true, "")
	first := testenv.RandomName("sy-it-acl1")
	r.runOnNetwork(testenv.RunOptions{Name: first, Ports: []string{"8080"}})
	r.waitService(r.serviceID(first), nil)

	// Revoked while running: resyncs fail, and so does the registration
	// of a container started meanwhile; both are retried.
	before, err := consulErrors(status)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Client.ACL().TokenDelete(accessor, nil); err != nil {
		t.Fatal(err)
	}
	waitReady(t, status, false, "403")
	second := testenv.RandomName("sy-it-acl2")
	r.runOnNetwork(testenv.RunOptions{Name: second, Ports: []string{"8080"}})
	waitMoreErrors(t, status, before, 4)
	secret2, _ := sc.CreateRegistrarToken(t, "registrar-2")
	testenv.WriteTokenFile(t, file, secret2)
	r.waitService(r.serviceID(second), nil)
	waitReady(t, status, true, "")

	// One log line per failed attempt: as many as the counter says.
	errs, err := consulErrors(status)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(p.Log(), code403); float64(lines) != errs {
		t.Errorf("%d log lines with a 403 for %v failed Consul calls; want one each", lines, errs)
	}
	noSecret(t, p, status, wrongToken, secret, secret2)
}

// A token on the command line is visible in ps: the registrar says so.
func TestTokenOnCommandLineWarns(t *testing.T) {
	r, sc := newACLRig(t)
	secret, _ := sc.CreateRegistrarToken(t, "registrar")
	p, status := r.startWithStatus("--consul-token", secret)
	waitReady(t, status, true, "")
	p.WaitLog(t, 10*time.Second, "--consul-token on the command line is visible")
	noSecret(t, p, status, secret)
}

// tlsArgs are the registrar's flags for the agent's HTTPS port.
func tlsArgs(r *rig, pki *testenv.PKI, addr string, extra ...string) []string {
	args := []string{"-node-name", r.node, "-retry-interval", "100", "-label-filter", r.scope(), "--consul-cacert", pki.CA,
		"--consul-client-cert", pki.ClientCert, "--consul-client-key", pki.ClientKey}
	return append(append(args, extra...), "consul-tls://"+addr)
}

// runRegistrar runs the binary to its end (a subcommand, or a daemon that
// gives up) and returns its exit code and output.
func runRegistrar(t *testing.T, bin string, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("registrar %v did not end: %v", args, ctx.Err())
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// TLS to an agent that requires client certificates (verify_incoming),
// with certificates made by the test: registration works over
// consul-tls://; the environment variables of Consul's CLI work too (with
// the server name); a wrong CA fails with an error naming the agent.
func TestRegistrationOverTLS(t *testing.T) {
	pki, other := testenv.NewPKI(t), testenv.NewPKI(t)
	r, sc := newSecureRig(t, testenv.SecureOptions{TLS: pki})
	status := statusAddr(t)
	testenv.StartProcess(t, "registrar", r.bin, tlsArgs(r, pki, sc.HTTPSAddr, "--status-addr", status))
	waitReady(t, status, true, "")
	name := testenv.RandomName("sy-it-tls")
	r.runOnNetwork(testenv.RunOptions{Name: name, Ports: []string{"8080"}})
	id := r.serviceID(name)
	r.waitService(id, nil)

	env := []string{"CONSUL_CACERT=" + pki.CA, "CONSUL_CLIENT_CERT=" + pki.ClientCert,
		"CONSUL_CLIENT_KEY=" + pki.ClientKey, "CONSUL_TLS_SERVER_NAME=" + testenv.PKIServerName}
	code, out := runRegistrar(t, r.bin, env, "drain", "--node-name", r.node, "consul-tls://"+sc.HTTPSAddr)
	if code != 0 || !strings.Contains(out, "1 services") {
		t.Fatalf("registrar drain over TLS, configured by environment: exit %d\n%s", code, out)
	}
	r.waitDraining(id)

	wrong := *pki
	wrong.CA = other.CA
	code, out = runRegistrar(t, r.bin, nil, tlsArgs(r, &wrong, sc.HTTPSAddr, "--retry-attempts", "0")...)
	want := []string{"consul agent https://" + sc.HTTPSAddr, "--consul-cacert=" + other.CA}
	if code != 1 || !strings.Contains(out, want[0]) || !strings.Contains(out, want[1]) {
		t.Fatalf("wrong CA: exit %d\n%s\nwant exit 1 and an error with %q", code, out, want)
	}
}

// runRegistered runs the fixture app as container name, labelled
// SERVICE_NAME=name so the catalog can be asked for it by that name, and
// waits until its service is registered; it returns the service ID.
func (r *rig) runRegistered(name string, env map[string]string) (*docker.Container, string) {
	r.t.Helper()
	ctr := r.runOnNetwork(testenv.RunOptions{
		Name: name, Labels: map[string]string{"SERVICE_NAME": name}, Ports: []string{"8080"}, Env: env,
	})
	id := r.serviceID(name)
	r.waitService(id, nil)
	return ctr, id
}

// reRegisterWithNewTags stops the registrar p and starts another with
// other tags, so that it writes service id (and every other) again, and
// waits until id carries them.
func (r *rig) reRegisterWithNewTags(p *testenv.Process, id string) {
	r.t.Helper()
	p.Stop(10 * time.Second)
	r.start("-resync", "1", "-tags", "v2")
	r.waitService(id, func(s *api.AgentService) error {
		if !strings.Contains(fmt.Sprint(s.Tags), "v2") {
			return fmt.Errorf("not re-registered yet: tags %v", s.Tags)
		}
		return nil
	})
}

// wantStillInMaintenance fails unless service id is in maintenance right
// after its re-registration: checked at once, not waited for, as a
// maintenance lost and put back later would leave a window of traffic.
func (r *rig) wantStillInMaintenance(id, why string) {
	r.t.Helper()
	if st, err := r.checkStatus(maintenanceCheck(id)); err != nil || st != api.HealthCritical {
		r.t.Fatalf("after the re-registration: maintenance check %q, %v; want critical (%s)", st, err, why)
	}
}

// A re-registration while a container drains (here a registrar restarted
// with other tags, so every service is written again) keeps its services
// in maintenance: the agent drops the maintenance check of a service
// re-registered with ReplaceExistingChecks.
func TestDrainSurvivesReRegistration(t *testing.T) {
	r := newRig(t)
	p := r.start("-resync", "1")
	name := testenv.RandomName("sy-it-redrain")
	ctr, id := r.runRegistered(name, map[string]string{"WEBAPP_DRAIN": "60s"})
	r.beginDrain(ctr, id)

	r.reRegisterWithNewTags(p, id)
	r.wantStillInMaintenance(id, "still draining")
	r.waitPassing(name, 0)
}

// `registrar drain` (host maintenance) survives a re-registration too.
func TestHostDrainSurvivesReRegistration(t *testing.T) {
	r := newRig(t)
	p := r.start("-resync", "1")
	_, id := r.runRegistered(testenv.RandomName("sy-it-hostredrain"), nil)
	code, out := runRegistrar(t, r.bin, nil, "drain", "--node-name", r.node, "consul://"+r.consul.Addr)
	if code != 0 {
		t.Fatalf("registrar drain: exit %d\n%s", code, out)
	}
	r.waitDraining(id)

	r.reRegisterWithNewTags(p, id)
	r.wantStillInMaintenance(id, "host drained")
}

// The agent restarts without its state while a container drains: the
// registrar registers the service again, and puts it back in maintenance.
func TestDrainSurvivesConsulRestart(t *testing.T) {
	r := newRig(t)
	r.start("-resync", "1")
	name := testenv.RandomName("sy-it-cdrain")
	ctr, id := r.runRegistered(name, map[string]string{"WEBAPP_DRAIN": "60s"})
	r.beginDrain(ctr, id)

	r.consul.Restart(t)
	r.waitService(id, nil)
	r.waitDraining(id)
	r.waitPassing(name, 0)
}
