package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// ConsulVersion is the release scripts/setup.sh builds and caches.
const ConsulVersion = "1.20.2"

// ConsulBinaryPath finds the consul binary: $SWITCHYARD_CONSUL, the cache
// scripts/setup.sh fills, then PATH.
func ConsulBinaryPath() (string, error) {
	cache := os.Getenv("SWITCHYARD_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "switchyard")
	}
	return lookBinary("SWITCHYARD_CONSUL", "consul", filepath.Join(cache, "consul-"+ConsulVersion, "consul"))
}

// Consul is a real Consul agent in dev mode (a single server, state in
// memory) on free loopback ports.
type Consul struct {
	Addr     string // HTTP address, "127.0.0.1:PORT"
	NodeName string
	Client   *api.Client
	// CloseIdle closes Client's idle connections, for tests that count
	// the connections to the agent.
	CloseIdle func()

	// The process, run as every agent of this package is (see agent.go).
	agentProcess
}

// StartConsul starts an agent and waits until it has a leader; the agent is
// stopped when the test ends, and its log printed if the test failed.
// Its connection limit per client address is raised to 4096: tests that
// run consul-template directly watch many services.
func StartConsul(t testing.TB) *Consul {
	t.Helper()
	return StartConsulLimited(t, raisedConnLimit)
}

// StartConsulLimited is StartConsul with http_max_conns_per_client set
// to connsPerClient; 0 keeps Consul's default (200), as users run it.
func StartConsulLimited(t testing.TB, connsPerClient int) *Consul {
	t.Helper()
	c, err := newConsul(needConsul(t), t.TempDir(), "consul-"+strconv.Itoa(os.Getpid()), connsPerClient)
	if err != nil {
		t.Fatal(err)
	}
	c.killAtTestEnd(t)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	return c
}

// raisedConnLimit is StartConsul's http_max_conns_per_client:
// consul-template opens one connection per watched service, and the
// default 200 per client address starves large catalogs (COMPAT §2).
const raisedConnLimit = 4096

// NewConsul prepares an agent on free ports; Start runs it. It is exported
// for the benchmarks, which have no testing.T.
func NewConsul(bin, dir, node string) (*Consul, error) {
	return newConsul(bin, dir, node, raisedConnLimit)
}

func newConsul(bin, dir, node string, connsPerClient int) (*Consul, error) {
	ports, err := devAgentPorts()
	if err != nil {
		return nil, err
	}
	addr := agentAddr(devAgentIP, ports)
	c := &Consul{Addr: addr, NodeName: node}
	if c.Client, c.CloseIdle, err = agentClient(addr); err != nil {
		return nil, err
	}
	c.agentProcess = agentProcess{
		label:   agentLabel(node, addr),
		bin:     bin,
		logPath: filepath.Join(dir, "consul.log"),
		args:    append(agentArgs(node, devAgentIP, ports), "-dev", "-log-level", "warn"),
	}
	if connsPerClient > 0 {
		c.args = append(c.args, "-hcl", fmt.Sprintf("limits { http_max_conns_per_client = %d }", connsPerClient))
	}
	return c, nil
}

// devAgentIP is the dev agent's address. Several dev agents (one per
// test package running in parallel) share it and differ by port.
const devAgentIP = "127.0.0.1"

// devAgentPorts picks the dev agent's ports as a Cluster's are picked
// (free for UDP too, where gossip also listens), with the listeners a
// single dev agent has no use for turned off: DNS and gRPC.
func devAgentPorts() (AgentPorts, error) {
	ports, err := pickAgentPorts([]string{devAgentIP})
	if err != nil {
		return AgentPorts{}, err
	}
	p := ports[0]
	p.DNS, p.GRPC, p.GRPCTLS = portOff, portOff, portOff
	return p, nil
}

// Start runs the agent and waits for a leader and for the agent's own node
// to be in the catalog.
func (c *Consul) Start() error {
	if _, err := c.start(); err != nil {
		return err
	}
	return c.waitReady(30*time.Second, c.Client, func() error {
		_, _, err := c.Client.Catalog().Node(c.NodeName, nil)
		return err
	})
}

// Stop kills the agent (SIGKILL: an outage, not a graceful leave) and
// waits for its exit, so a restart can bind the same ports again.
func (c *Consul) Stop() { c.kill() }

// Restart kills the agent and starts it again on the same ports. Dev mode
// keeps state in memory, so this is an agent restart with its data wiped:
// every registration is lost and must come back from the registrars.
func (c *Consul) Restart(t testing.TB) {
	t.Helper()
	c.Stop()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
}

// Log returns what the agent has logged so far.
func (c *Consul) Log() string { return c.readLog() }

// Services returns the healthy instances of name in the catalog.
func (c *Consul) Services(ctx context.Context, name string, passingOnly bool) ([]*api.ServiceEntry, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	entries, _, err := c.Client.Health().Service(name, "", passingOnly, q)
	return entries, err
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
