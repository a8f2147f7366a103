package consul

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/registrar/internal/service"
	"github.com/switchyard/switchyard/scripts/testenv"
)

func svc(id string, check *service.Check) service.Service {
	return service.Service{
		ID: id, Name: "web", Address: "127.0.0.1", Port: 18080, Tags: []string{"b", "a"},
		Meta:        map[string]string{service.MetaNode: "n1", service.MetaContainerID: "c-" + id, "version": "1"},
		ContainerID: "c-" + id, Check: check,
	}
}

func TestCatalogAgainstRealConsul(t *testing.T) {
	c := testenv.StartConsul(t)
	ctx := t.Context()
	cat := New(c.Client, "n1")
	other := New(c.Client, "n2")

	checks := map[string]*service.Check{
		"none":  nil,
		"http":  {HTTP: "http://127.0.0.1:18080/health", Method: "HEAD", Interval: 10 * time.Second, Timeout: time.Second, Status: "passing", DeregisterAfter: 90 * time.Minute},
		"https": {HTTP: "https://127.0.0.1:18080/h", TLSSkipVerify: true, Interval: 10 * time.Second},
		"tcp":   {TCP: "127.0.0.1:18080", Interval: 5 * time.Second},
		"grpc":  {GRPC: "127.0.0.1:18080/health", GRPCUseTLS: true, Interval: 5 * time.Second},
		"ttl":   {TTL: 30 * time.Second, Status: "warning"},
	}
	for id, ch := range checks {
		if err := cat.Register(ctx, svc(id, ch)); err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
	}
	if err := other.Register(ctx, func() service.Service {
		s := svc("theirs", nil)
		s.Meta[service.MetaNode] = "n2"
		return s
	}()); err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "manual", Name: "manual"}); err != nil {
		t.Fatal(err)
	}

	owned, err := cat.Owned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range owned {
		ids = append(ids, r.ID)
		if r.ContainerID != "c-"+r.ID || r.Fingerprint != svc(r.ID, checks[r.ID]).Fingerprint() {
			t.Errorf("registration %+v", r)
		}
	}
	slices.Sort(ids)
	if want := []string{"grpc", "http", "https", "none", "tcp", "ttl"}; !slices.Equal(ids, want) {
		t.Fatalf("owned %v, want %v (never theirs or manual)", ids, want)
	}

	// Registered as we said.
	got, _, err := c.Client.Agent().Service("http", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Address != "127.0.0.1" || got.Port != 18080 || !slices.Equal(got.Tags, []string{"b", "a"}) || got.Meta["version"] != "1" {
		t.Errorf("service %+v", got)
	}
	hc, err := c.Client.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, ch := range hc {
		kinds[ch.ServiceID] = ch.Type
	}
	for id, want := range map[string]string{"http": "http", "https": "http", "tcp": "tcp", "grpc": "grpc", "ttl": "ttl"} {
		if kinds[id] != want {
			t.Errorf("check of %s is %q, want %q", id, kinds[id], want)
		}
	}

	// A re-registration without the check removes it.
	if err := cat.Register(ctx, svc("tcp", nil)); err != nil {
		t.Fatal(err)
	}
	hc, _ = c.Client.Agent().Checks()
	for _, ch := range hc {
		if ch.ServiceID == "tcp" {
			t.Error("stale check kept after re-registration")
		}
	}

	if err := cat.Deregister(ctx, "http"); err != nil {
		t.Fatal(err)
	}
	if err := cat.Deregister(ctx, "never-existed"); err != nil {
		t.Fatalf("deregister unknown: %v", err)
	}

	// Script checks are off on this agent: a rejection of this service,
	// not an outage.
	err = cat.Register(ctx, svc("script", &service.Check{Args: []string{"/bin/true"}, Interval: 10 * time.Second}))
	var we *WriteError
	if err == nil || !errors.As(err, &we) || !we.Rejected() {
		t.Fatalf("script check on a default agent: %v, want a rejection", err)
	}

	// Agent down: not a rejection.
	c.Stop()
	err = cat.Register(ctx, svc("down", nil))
	if err == nil || !errors.As(err, &we) || we.Rejected() {
		t.Fatalf("agent down: %v, want a non-rejection error", err)
	}
	if _, err := cat.Owned(ctx); err == nil {
		t.Fatal("Owned with the agent down did not fail")
	}
}

func TestRegistrationOmitsZeroDurations(t *testing.T) {
	r := Registration(svc("x", &service.Check{TTL: 30 * time.Second}))
	if len(r.Checks) != 1 {
		t.Fatalf("checks %+v", r.Checks)
	}
	if ch := r.Checks[0]; ch.Interval != "" || ch.Timeout != "" || ch.TTL != "30s" || ch.DeregisterCriticalServiceAfter != "" {
		t.Errorf("check %+v", ch)
	}
	if r.Meta[service.MetaFingerprint] == "" {
		t.Error("no fingerprint meta")
	}
}

// TestSeveralChecksReachConsul: issue 8. Every check of a service reaches
// the agent under an ID named by its index, and an HTTP check carries its
// headers: the agent's probe of a server that answers 200 only with the
// header turns the check passing.
func TestSeveralChecksReachConsul(t *testing.T) {
	c := testenv.StartConsul(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") != "k1" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(srv.Close)
	cat := New(c.Client, "n1")
	s := svc("multi", &service.Check{TTL: time.Minute, Status: "warning"})
	s.Checks = []service.Check{
		{Index: 1, HTTP: srv.URL + "/health", Interval: time.Second, Header: map[string][]string{"X-Api-Key": {"k1"}}},
		{Index: 3, TTL: 30 * time.Second, Status: "passing"},
	}
	if err := cat.Register(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		checks, err := c.Client.Agent().Checks()
		if err != nil {
			return err
		}
		want := map[string]string{"service:multi": "warning", "service:multi:1": "passing", "service:multi:3": "passing"}
		for id, status := range want {
			hc := checks[id]
			if hc == nil || hc.ServiceID != "multi" || hc.Status != status {
				return fmt.Errorf("check %s: %+v, want %s", id, hc, status)
			}
		}
		return nil
	})
}
