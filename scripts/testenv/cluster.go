package testenv

import (
	"fmt"
	"math"
	"net"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Consul's failure detection in a Cluster: the gossip_lan settings its
// agents run with. They are those of `consul agent -dev` (100ms each,
// suspicion_mult 3) but for the probe interval, doubled, and the probe
// timeout, raised by half: a test machine with two cores also runs the
// race-built daemons, nginx, HAProxy and Docker, and a probe answered late
// must not mark a live node failed.
const (
	ClusterGossipInterval = 100 * time.Millisecond
	ClusterProbeInterval  = 200 * time.Millisecond
	ClusterProbeTimeout   = 150 * time.Millisecond
	ClusterSuspicionMult  = 3
	// memberlist's default: a suspicion lasts at most this many times its
	// minimum, when no other node confirms it.
	clusterSuspicionMaxTimeoutMult = 6
)

// ClusterFailureDetection is how long, at most, the cluster's gossip takes
// to declare a dead member failed: one probe round to notice it (the
// interval and the timeout of a direct probe and of the indirect ones),
// then the longest suspicion memberlist allows among n members
// (SuspicionMult * max(1, log10 n) * ProbeInterval, times 6). The leader
// marks the node's serfHealth check critical on that event.
func ClusterFailureDetection(n int) time.Duration {
	scale := math.Max(1, math.Log10(math.Max(1, float64(n))))
	minSuspicion := time.Duration(ClusterSuspicionMult * scale * float64(ClusterProbeInterval))
	return ClusterProbeInterval + 2*ClusterProbeTimeout + clusterSuspicionMaxTimeoutMult*minSuspicion
}

// clusterHCL is the configuration every agent of a Cluster shares.
func clusterHCL() string {
	gossip := fmt.Sprintf(`{ gossip_interval = "%s" probe_interval = "%s" probe_timeout = "%s" suspicion_mult = %d }`,
		ClusterGossipInterval, ClusterProbeInterval, ClusterProbeTimeout, ClusterSuspicionMult)
	return "performance { raft_multiplier = 1 }\n" +
		// No call to checkpoint-api.hashicorp.com: tests talk to 127.x only.
		"disable_update_check = true\n" +
		"gossip_lan " + gossip + "\n" +
		"gossip_wan " + gossip + "\n" +
		// consul-template opens one connection per watched service (COMPAT §2).
		"limits { http_max_conns_per_client = 4096 }\n" +
		// A restarted server is a voter again one second after it is healthy.
		"autopilot { server_stabilization_time = \"1s\" }\n"
}

// AgentPorts are an agent's ports, all distinct across the cluster.
type AgentPorts struct {
	HTTP, DNS, Server, SerfLAN, SerfWAN, GRPC, GRPCTLS int
}

// Agent is one Consul agent of a Cluster, server or client, on a loopback
// address of its own with its state in a data dir of its own, so it can be
// killed and started again as the same node.
type Agent struct {
	Name    string
	IP      string // 127.0.0.x
	Server  bool
	Ports   AgentPorts
	Addr    string // HTTP address, IP:Ports.HTTP
	DataDir string
	Client  *api.Client

	// The process, run as every agent of this package is (see agent.go).
	agentProcess
}

// Cluster is a real Consul cluster on this machine: servers (3 by default)
// and one client agent per simulated host, each agent on its own loopback
// address 127.0.0.x, with raft and gossip timings tuned for tests (see
// clusterHCL). Every agent is stopped by PID when the test ends.
type Cluster struct {
	Servers []*Agent
	Clients []*Agent
}

// ClusterOptions describes a cluster.
type ClusterOptions struct {
	Servers int      // default 3
	Clients []string // node names of the client agents, one per host
	// FirstIP is the last byte of the first agent's address, 127.0.0.FirstIP
	// (default 11); the agents take consecutive addresses.
	FirstIP int
}

// StartCluster starts the servers, waits for a leader with every server a
// voter, then starts the clients and waits until each is a healthy member.
func StartCluster(t testing.TB, o ClusterOptions) *Cluster {
	t.Helper()
	bin := needConsul(t)
	if o.Servers == 0 {
		o.Servers = 3
	}
	if o.FirstIP == 0 {
		o.FirstIP = 11
	}
	n := o.Servers + len(o.Clients)
	if o.FirstIP+n > 254 {
		t.Fatalf("cluster: %d agents from 127.0.0.%d do not fit", n, o.FirstIP)
	}
	ips := make([]string, n)
	for i := range ips {
		ips[i] = "127.0.0." + strconv.Itoa(o.FirstIP+i)
	}
	ports, err := pickAgentPorts(ips)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{}
	for i := range n {
		a := &Agent{IP: ips[i], Ports: ports[i], Server: i < o.Servers}
		if a.Server {
			a.Name = "consul-server-" + strconv.Itoa(i+1)
			c.Servers = append(c.Servers, a)
		} else {
			a.Name = o.Clients[i-o.Servers]
			c.Clients = append(c.Clients, a)
		}
	}
	var joins []string
	for _, s := range c.Servers {
		joins = append(joins, net.JoinHostPort(s.IP, strconv.Itoa(s.Ports.SerfLAN)))
	}
	for _, a := range c.all() {
		a.configure(t, bin, joins, o.Servers)
	}

	for _, s := range c.Servers {
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitVoters(60*time.Second, o.Servers); err != nil {
		t.Fatal(err)
	}
	for _, a := range c.Clients {
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range c.Clients {
		if err := a.WaitReady(60 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// configure gives agent a its data dir, client and command line: its own
// ports on its own address, joining every other server of joins.
func (a *Agent) configure(t testing.TB, bin string, joins []string, servers int) {
	a.DataDir = t.TempDir()
	a.Addr = agentAddr(a.IP, a.Ports)
	var err error
	if a.Client, _, err = agentClient(a.Addr); err != nil {
		t.Fatal(err)
	}
	a.agentProcess = agentProcess{
		label:   agentLabel(a.Name, a.Addr),
		bin:     bin,
		logPath: filepath.Join(a.DataDir, "consul.log"),
		args:    append(agentArgs(a.Name, a.IP, a.Ports), a.clusterArgs(joins, servers)...),
	}
	a.killAtTestEnd(t)
}

// clusterArgs is what a Cluster's agent adds to the flags every agent of
// this package has: a data dir that survives a kill, the tuned timings,
// the joins, and for a server the size of the cluster it bootstraps.
func (a *Agent) clusterArgs(joins []string, servers int) []string {
	args := []string{
		"-data-dir", a.DataDir,
		// A restarted agent retries its join every second, not every 30.
		"-retry-interval", "1s",
		"-log-level", "info",
		"-hcl", clusterHCL(),
	}
	self := net.JoinHostPort(a.IP, strconv.Itoa(a.Ports.SerfLAN))
	for _, j := range joins {
		if j != self {
			args = append(args, "-retry-join", j)
		}
	}
	if a.Server {
		args = append(args, "-server", "-bootstrap-expect", strconv.Itoa(servers))
	}
	return args
}

func (c *Cluster) all() []*Agent { return append(append([]*Agent(nil), c.Servers...), c.Clients...) }

// Agent returns the agent named name, or nil.
func (c *Cluster) Agent(name string) *Agent {
	for _, a := range c.all() {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// Leader returns the server the running servers agree leads, or an error
// while they do not (an election, or one of them still believes in a dead
// leader).
func (c *Cluster) Leader() (*Agent, error) {
	var leader string
	for _, s := range c.Servers {
		if !s.Running() {
			continue
		}
		l, err := s.Client.Status().Leader()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Name, err)
		}
		if l == "" {
			return nil, fmt.Errorf("%s knows no leader", s.Name)
		}
		if leader != "" && l != leader {
			return nil, fmt.Errorf("servers disagree on the leader: %s and %s", leader, l)
		}
		leader = l
	}
	for _, s := range c.Servers {
		if net.JoinHostPort(s.IP, strconv.Itoa(s.Ports.Server)) == leader {
			if !s.Running() {
				return nil, fmt.Errorf("the leader %s is not running", s.Name)
			}
			return s, nil
		}
	}
	return nil, fmt.Errorf("leader %q is none of the servers", leader)
}

// WaitVoters waits until the servers agree on a running leader and the raft
// configuration has n voters, each of them a running server.
func (c *Cluster) WaitVoters(timeout time.Duration, n int) error {
	return WaitFor(timeout, func() error {
		l, err := c.Leader()
		if err != nil {
			return err
		}
		cfg, err := l.Client.Operator().RaftGetConfiguration(nil)
		if err != nil {
			return err
		}
		voters := 0
		for _, s := range cfg.Servers {
			if s.Voter {
				voters++
			}
		}
		if voters != n {
			return fmt.Errorf("%d raft voters, want %d: %+v", voters, n, cfg.Servers)
		}
		return nil
	})
}

// Start runs the agent (again: same node, address, ports and data dir).
func (a *Agent) Start() error {
	pid, err := a.start()
	if err != nil {
		return err
	}
	boost(pid)
	return nil
}

// boost raises a daemon of a simulated host to nice -10, best effort: the
// machine running the tests may run dozens of other processes, and a Consul
// agent starved of CPU for longer than its raft lease (500ms here) or its
// gossip probe timeout loses leadership or is suspected failed, which no
// production agent sized for its host suffers. The daemons under test, our
// registrar and renderer, keep the default priority.
func boost(pid int) {
	_ = syscall.Setpriority(syscall.PRIO_PROCESS, pid, -10)
}

// WaitReady waits until the agent answers, sees a leader, and its node is
// in the catalog with a passing serfHealth: a member the servers count on.
func (a *Agent) WaitReady(timeout time.Duration) error {
	return a.waitReady(timeout, a.Client, func() error {
		checks, _, err := a.Client.Health().Node(a.Name, nil)
		if err != nil {
			return err
		}
		for _, ch := range checks {
			if ch.CheckID == "serfHealth" && ch.Status == api.HealthPassing {
				return nil
			}
		}
		return fmt.Errorf("node %s has no passing serfHealth yet: %v", a.Name, checks)
	})
}

// Running reports whether the agent's process runs.
func (a *Agent) Running() bool { return a.running() }

// Pid returns the agent's PID, 0 when it does not run.
func (a *Agent) Pid() int { return a.pid() }

// Kill is kill -9 of the agent: no leave, its state stays in the data dir.
// It waits for the exit, so Start can bind the same ports again.
func (a *Agent) Kill() { a.kill() }

// Log returns what the agent has logged so far.
func (a *Agent) Log() string { return a.readLog() }
