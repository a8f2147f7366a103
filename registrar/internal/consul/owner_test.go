package consul

import (
	"errors"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/registrar/internal/service"
	"github.com/switchyard/switchyard/scripts/testenv"
)

// A service ID held by someone else (by hand, another tool, another
// registrar's node) is never overwritten or removed, against a real agent.
func TestNeverTakesOverAForeignService(t *testing.T) {
	c := testenv.StartConsul(t)
	ctx := t.Context()
	cat := New(c.Client, "n1")
	agent := c.Client.Agent()
	if err := agent.ServiceRegister(&api.AgentServiceRegistration{ID: "vault", Name: "vault", Port: 8200}); err != nil {
		t.Fatal(err)
	}
	theirs := svc("theirs", nil)
	theirs.Meta[service.MetaNode] = "n2"
	if err := New(c.Client, "n2").Register(ctx, theirs); err != nil {
		t.Fatal(err)
	}

	for _, id := range []string{"vault", "theirs"} {
		err := cat.Register(ctx, svc(id, nil))
		var we *WriteError
		if !errors.As(err, &we) || !we.NotOwned() || we.Rejected() || we.Holder() != map[string]string{"vault": "", "theirs": "n2"}[id] {
			t.Errorf("register over %s: %v, want a not-owned refusal", id, err)
		}
		if err := cat.Deregister(ctx, id); !errors.As(err, &we) || !we.NotOwned() {
			t.Errorf("deregister of %s: %v, want a not-owned refusal", id, err)
		}
	}
	got, _, err := agent.Service("vault", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Port != 8200 || got.Meta[service.MetaNode] != "" {
		t.Errorf("hand-registered vault changed: port %d meta %v", got.Port, got.Meta)
	}
	if got, _, err := agent.Service("theirs", nil); err != nil || got.Meta[service.MetaNode] != "n2" {
		t.Errorf("another node's service changed: %+v, %v", got, err)
	}

	// Ours, even from another container of ours (a re-created container
	// with the same SERVICE_ID): updated and removed as before.
	if err := cat.Register(ctx, svc("mine", nil)); err != nil {
		t.Fatal(err)
	}
	again := svc("mine", nil)
	again.ContainerID, again.Meta[service.MetaContainerID] = "c-other", "c-other"
	if err := cat.Register(ctx, again); err != nil {
		t.Fatalf("update of our own service: %v", err)
	}
	if err := cat.Deregister(ctx, "mine"); err != nil {
		t.Fatalf("deregister of our own service: %v", err)
	}
	if _, _, err := agent.Service("mine", nil); err == nil {
		t.Error("our service not removed")
	}
}
