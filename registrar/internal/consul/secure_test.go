package consul

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/registrar/internal/service"
	"github.com/switchyard/switchyard/scripts/testenv"
)

const managementToken = "b1c2d3e4-0000-4000-8000-000000000001"

// startACLAgent starts an agent whose ACLs deny by default, as in
// production: a call the token under test does not cover fails here too.
func startACLAgent(t *testing.T) *testenv.SecureConsul {
	t.Helper()
	return testenv.StartSecureConsul(t, testenv.SecureOptions{ACLToken: managementToken})
}

// mustOpen opens a catalog for node n1. The tests build cfg themselves, so
// it must open: what they check is the calls that follow.
func mustOpen(t *testing.T, cfg Config) *Catalog {
	t.Helper()
	cat, err := Open(cfg, "n1")
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

func dockerChecked(id string) service.Service {
	s := svc(id, &service.Check{Docker: true, TTL: 30 * time.Second, Status: api.HealthPassing})
	s.Checks = []service.Check{{Index: 1, TCP: "127.0.0.1:18080", Interval: 10 * time.Second}}
	return s
}

// maintNotes returns the notes of the maintenance check of id, and whether
// there is one.
func maintNotes(t *testing.T, c *api.Client, id string) (string, bool) {
	t.Helper()
	checks, err := c.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	ch, ok := checks[MaintenanceCheckPrefix+id]
	if !ok {
		return "", false
	}
	return ch.Notes, true
}

// A re-registration (a resync or an update while the service drains, or
// during `registrar drain`) keeps the service in maintenance, while the
// checks it no longer has are removed. Fails with ReplaceExistingChecks,
// with which the agent drops the maintenance check with the stale ones.
func TestReRegistrationKeepsMaintenance(t *testing.T) {
	c := testenv.StartConsul(t)
	ctx := t.Context()
	cat := New(c.Client, "n1")
	s := dockerChecked("web")
	if err := cat.Register(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := cat.Maintenance(ctx, "web", true, "draining"); err != nil {
		t.Fatal(err)
	}
	s.Tags = append(s.Tags, "v2")
	s.Checks = nil // check 1 is gone
	if err := cat.Register(ctx, s); err != nil {
		t.Fatal(err)
	}
	if notes, ok := maintNotes(t, c.Client, "web"); !ok || notes != "draining" {
		t.Fatalf("maintenance after re-registration: %t (notes %q); want kept, with its reason", ok, notes)
	}
	checks, err := c.Client.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := checks["service:web:1"]; ok {
		t.Error("check 1 kept after a re-registration without it")
	}
	if _, ok := checks[DockerCheckID("web")]; !ok {
		t.Error("Docker check lost")
	}
	got, _, err := c.Client.Agent().Service("web", nil)
	if err != nil || !strings.Contains(fmt.Sprint(got.Tags), "v2") {
		t.Fatalf("re-registration not applied: %+v, %v", got, err)
	}
}

// Every call the registrar makes works with a token holding exactly the
// documented policy, against an agent whose default policy is deny; and
// what the agent holds reaches the catalog, which renderers read.
func TestLeastPrivilegePolicyCoversEveryCall(t *testing.T) {
	c := startACLAgent(t)
	secret, _ := c.CreateRegistrarToken(t, "registrar")
	cat := mustOpen(t, Config{Address: c.Addr, Token: secret})
	ctx := t.Context()
	l, err := net.Listen("tcp", "127.0.0.1:0") // for the TCP check to pass
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := dockerChecked("web-1")
	s.Checks[0].TCP, s.Checks[0].Interval = l.Addr().String(), time.Second
	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s with the least-privilege token: %v", what, err)
		}
	}
	step("register", cat.Register(ctx, s))
	step("update the Docker check", cat.UpdateDockerCheck(ctx, s))
	owned, err := cat.Owned(ctx)
	step("list owned services", err)
	if len(owned) != 1 || owned[0].ID != "web-1" {
		t.Fatalf("owned %+v, want web-1", owned)
	}
	waitCatalog(t, c.Client, "web", 1)
	step("maintenance on", cat.Maintenance(ctx, "web-1", true, "drain"))
	waitCatalog(t, c.Client, "web", 0)
	s.Checks = nil
	step("re-register without a check", cat.Register(ctx, s))
	if _, ok := maintNotes(t, c.Client, "web-1"); !ok {
		t.Fatal("maintenance lost")
	}
	step("maintenance off", cat.Maintenance(ctx, "web-1", false, ""))
	waitCatalog(t, c.Client, "web", 1)
	step("deregister", cat.Deregister(ctx, "web-1"))
	if owned, err := cat.Owned(ctx); err != nil || len(owned) != 0 {
		t.Fatalf("after deregister: %+v, %v", owned, err)
	}
	// Nor did the agent's sync to the catalog, which uses our token for
	// our services, meet a refusal. The harness's own readiness poll may
	// ask before the ACL system is bootstrapped ("must be bootstrapped
	// ... ACL not found"); the registrar holds a token only after that.
	for _, line := range strings.Split(c.Log(), "\n") {
		if strings.Contains(line, "ACL system must be bootstrapped") {
			continue
		}
		for _, refusal := range []string{"Permission denied", "blocked by ACLs", "ACL not found"} {
			if strings.Contains(line, refusal) {
				t.Errorf("agent log has %q: %s", refusal, line)
			}
		}
	}
}

// waitCatalog waits until the catalog has n passing instances of name.
func waitCatalog(t *testing.T, c *api.Client, name string, n int) {
	t.Helper()
	testenv.Eventually(t, 15*time.Second, func() error {
		entries, _, err := c.Health().Service(name, "", true, nil)
		if err != nil {
			return err
		}
		if len(entries) != n {
			return fmt.Errorf("catalog has %d passing %s, want %d", len(entries), name, n)
		}
		return nil
	})
}

// A policy short of the documented one is refused with a 403 that points
// at the policy, and names the agent.
func TestTooWeakPolicyIsExplained(t *testing.T) {
	c := startACLAgent(t)
	secret, _ := c.CreateACLToken(t, "read-only", `service_prefix "" { policy = "read" }`)
	cat := mustOpen(t, Config{Address: c.Addr, Token: secret})
	err := cat.Register(t.Context(), svc("web-1", nil))
	var we *WriteError
	if !errors.As(err, &we) || !we.Rejected() {
		t.Fatalf("register with a read-only token: %v, want a rejection", err)
	}
	for _, want := range []string{"consul agent http://" + c.Addr, "403", "registrar-policy.hcl"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error shows the token: %q", err)
	}
}

// consul/api reads a token file once; ours is read for every call: a
// wrong token is refused with an explained 403 that does not show it, the
// repaired file works without a new client, a revoked token fails again,
// and a missing file names the flag.
func TestTokenFileIsReadForEveryCall(t *testing.T) {
	c := startACLAgent(t)
	secret, accessor := c.CreateRegistrarToken(t, "registrar")
	file := filepath.Join(t.TempDir(), "token")
	const wrong = "0badbad0-1111-4222-8333-444455556666"
	testenv.WriteTokenFile(t, file, wrong)
	cat := mustOpen(t, Config{Address: c.Addr, TokenFile: file})
	ctx := t.Context()
	wantRefused := func(why string, token string) {
		t.Helper()
		_, err := cat.Owned(ctx)
		if err == nil {
			t.Fatalf("%s: listing worked", why)
		}
		msg := err.Error()
		if !strings.Contains(msg, "403") || !strings.Contains(msg, "--consul-token-file") || strings.Contains(msg, token) {
			t.Errorf("%s: %q; want a 403 naming --consul-token-file, without the token", why, msg)
		}
	}
	wantRefused("wrong token", wrong)

	testenv.WriteTokenFile(t, file, secret)
	if _, err := cat.Owned(ctx); err != nil {
		t.Fatalf("token file repaired, same client: %v", err)
	}
	if _, err := c.Client.ACL().TokenDelete(accessor, nil); err != nil {
		t.Fatal(err)
	}
	wantRefused("revoked token", secret)

	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if _, err := cat.Owned(ctx); err == nil || !strings.Contains(err.Error(), "--consul-token-file") || !strings.Contains(err.Error(), file) {
		t.Errorf("missing token file: %v; want an error naming the flag and the file", err)
	}
	if _, err := Open(Config{Address: c.Addr, TokenFile: file}, "n1"); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("missing token file at start-up: %v; want an error naming the file", err)
	}
}

// TLS to an agent that requires client certificates: the right CA, client
// certificate and server name work; each wrong one fails with an error
// naming the agent and the flag to fix.
func TestTLSToTheAgent(t *testing.T) {
	pki, other := testenv.NewPKI(t), testenv.NewPKI(t)
	c := testenv.StartSecureConsul(t, testenv.SecureOptions{TLS: pki})
	addr := "https://" + c.HTTPSAddr
	good := Config{Address: addr, CACert: pki.CA, ClientCert: pki.ClientCert, ClientKey: pki.ClientKey}
	ping := func(cfg Config) error {
		cat, err := Open(cfg, "n1")
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		return cat.Ping(ctx)
	}
	if err := ping(good); err != nil {
		t.Fatalf("TLS with CA, client certificate and key: %v", err)
	}
	named := good
	named.ServerName = testenv.PKIServerName
	if err := ping(named); err != nil {
		t.Fatalf("TLS with --consul-tls-server-name=%s: %v", testenv.PKIServerName, err)
	}

	wrongCA := good
	wrongCA.CACert = other.CA
	noClientCert := good
	noClientCert.ClientCert, noClientCert.ClientKey = "", ""
	wrongName := good
	wrongName.ServerName = "wrong.example"
	plain := good
	plain.Address = "http://" + c.HTTPSAddr
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"wrong CA", wrongCA, "--consul-cacert=" + other.CA},
		{"no client certificate", noClientCert, "--consul-client-cert"},
		{"wrong server name", wrongName, "--consul-tls-server-name"},
		{"plain HTTP to the HTTPS port", plain, "consul-tls://"},
	} {
		err := ping(tc.cfg)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
		if !strings.Contains(err.Error(), c.HTTPSAddr) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %q; want the agent's address and %q", tc.name, err, tc.want)
		}
	}
	if _, err := Open(Config{Address: addr, ClientCert: pki.ClientCert, ClientKey: other.ClientKey}, "n1"); err == nil || !strings.Contains(err.Error(), "--consul-client-key") {
		t.Errorf("mismatched client key: %v; want an error naming the flags", err)
	}
}
