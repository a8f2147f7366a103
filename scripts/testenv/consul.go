package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
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

	bin     string
	args    []string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// StartConsul starts an agent and waits until it has a leader; the agent is
// stopped when the test ends, and its log printed if the test failed.
func StartConsul(t testing.TB) *Consul {
	t.Helper()
	bin, err := ConsulBinaryPath()
	Need(t, err == nil, fmt.Sprintf("consul v%s: %v", ConsulVersion, err))
	c, err := NewConsul(bin, t.TempDir(), "consul-"+strconv.Itoa(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(c.logPath)
			t.Logf("consul log (tail):\n%s", tail(b, 4000))
		}
	})
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	return c
}

// NewConsul prepares an agent on free ports; Start runs it. It is exported
// for the benchmarks, which have no testing.T.
func NewConsul(bin, dir, node string) (*Consul, error) {
	ports, err := PickPorts(4)
	if err != nil {
		return nil, err
	}
	c := &Consul{
		Addr:     "127.0.0.1:" + strconv.Itoa(ports[0]),
		NodeName: node,
		bin:      bin,
		logPath:  filepath.Join(dir, "consul.log"),
		args: []string{
			"agent", "-dev", "-node", node,
			"-bind", "127.0.0.1", "-client", "127.0.0.1", "-advertise", "127.0.0.1",
			"-http-port", strconv.Itoa(ports[0]),
			"-serf-lan-port", strconv.Itoa(ports[1]),
			"-serf-wan-port", strconv.Itoa(ports[2]),
			"-server-port", strconv.Itoa(ports[3]),
			"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
			"-log-level", "warn",
			// consul-template opens one connection per watched service; the
			// default 200 per client address starves large catalogs (COMPAT §2).
			"-hcl", "limits { http_max_conns_per_client = 4096 }",
		},
	}
	cfg := api.DefaultConfig()
	cfg.Address = c.Addr
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.Client = client
	return c, nil
}

// Start runs the agent and waits for a leader and for the agent's own node
// to be in the catalog.
func (c *Consul) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		return errors.New("consul already running")
	}
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, c.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start consul: %w", err)
	}
	c.cmd = cmd
	done := make(chan struct{})
	c.done = done
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	err = WaitFor(30*time.Second, func() error {
		leader, err := c.Client.Status().Leader()
		if err != nil {
			return err
		}
		if leader == "" {
			return errors.New("no leader yet")
		}
		_, _, err = c.Client.Catalog().Node(c.NodeName, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("consul at %s not ready: %w", c.Addr, err)
	}
	return nil
}

// Stop kills the agent (SIGKILL: an outage, not a graceful leave).
func (c *Consul) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Kill()
	// Wait for the exit, so a restart can bind the same ports again.
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
	}
	c.cmd = nil
}

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
func (c *Consul) Log() string {
	b, _ := os.ReadFile(c.logPath)
	return string(b)
}

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
