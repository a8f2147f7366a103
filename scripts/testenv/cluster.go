package testenv

import (
	"errors"
	"fmt"
	"math"
	"net"
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

	bin, logPath string
	args         []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
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
	bin, err := ConsulBinaryPath()
	Need(t, err == nil, fmt.Sprintf("consul v%s: %v", ConsulVersion, err))
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
		a := &Agent{IP: ips[i], Ports: ports[i], Server: i < o.Servers, bin: bin}
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
		a.configure(t, joins, o.Servers)
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
func (a *Agent) configure(t testing.TB, joins []string, servers int) {
	a.DataDir = t.TempDir()
	a.logPath = filepath.Join(a.DataDir, "consul.log")
	a.Addr = net.JoinHostPort(a.IP, strconv.Itoa(a.Ports.HTTP))
	cfg := api.DefaultConfig()
	cfg.Address = a.Addr
	var err error
	if a.Client, err = api.NewClient(cfg); err != nil {
		t.Fatal(err)
	}
	a.args = []string{
		"agent", "-node", a.Name, "-data-dir", a.DataDir,
		"-bind", a.IP, "-advertise", a.IP, "-client", a.IP,
		"-http-port", strconv.Itoa(a.Ports.HTTP),
		"-dns-port", strconv.Itoa(a.Ports.DNS),
		"-server-port", strconv.Itoa(a.Ports.Server),
		"-serf-lan-port", strconv.Itoa(a.Ports.SerfLAN),
		"-serf-wan-port", strconv.Itoa(a.Ports.SerfWAN),
		"-grpc-port", strconv.Itoa(a.Ports.GRPC),
		"-grpc-tls-port", strconv.Itoa(a.Ports.GRPCTLS),
		// A restarted agent retries its join every second, not every 30.
		"-retry-interval", "1s",
		"-log-level", "info",
		"-hcl", clusterHCL(),
	}
	for _, j := range joins {
		if j != net.JoinHostPort(a.IP, strconv.Itoa(a.Ports.SerfLAN)) {
			a.args = append(a.args, "-retry-join", j)
		}
	}
	if a.Server {
		a.args = append(a.args, "-server", "-bootstrap-expect", strconv.Itoa(servers))
	}
	t.Cleanup(func() {
		a.Kill()
		if t.Failed() {
			t.Logf("consul agent %s log (tail):\n%s", a.Name, tailFile(a.logPath, 3000))
		}
	})
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
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		return errors.New("consul agent " + a.Name + " already running")
	}
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(a.bin, a.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start consul agent %s: %w", a.Name, err)
	}
	done := make(chan struct{})
	a.cmd, a.done = cmd, done
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	boost(cmd.Process.Pid)
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
	err := WaitFor(timeout, func() error {
		if !a.Running() {
			return fmt.Errorf("consul agent %s exited", a.Name)
		}
		l, err := a.Client.Status().Leader()
		if err != nil {
			return err
		}
		if l == "" {
			return errors.New("no leader yet")
		}
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
	if err != nil {
		return fmt.Errorf("consul agent %s at %s not ready: %w\n%s", a.Name, a.Addr, err, tailFile(a.logPath, 2000))
	}
	return nil
}

// Running reports whether the agent's process runs.
func (a *Agent) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cmd != nil
}

// Pid returns the agent's PID, 0 when it does not run.
func (a *Agent) Pid() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

// Kill is kill -9 of the agent: no leave, its state stays in the data dir.
// It waits for the exit, so Start can bind the same ports again.
func (a *Agent) Kill() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Kill()
	<-a.done
	a.cmd = nil
}

// Log returns what the agent has logged so far.
func (a *Agent) Log() string {
	b, _ := os.ReadFile(a.logPath)
	return string(b)
}

// pickAgentPorts picks 7 ports per address, all distinct across the
// cluster, each free for TCP and UDP on its address at the time: every
// listener stays open until all are picked, so none is handed out twice.
func pickAgentPorts(ips []string) ([]AgentPorts, error) {
	var closers []func() error
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	used := map[int]bool{}
	pick := func(ip string) (int, error) {
		for range 100 {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
			if err != nil {
				return 0, err
			}
			closers = append(closers, l.Close)
			p := l.Addr().(*net.TCPAddr).Port
			if used[p] {
				continue
			}
			u, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(p)))
			if err != nil {
				continue
			}
			closers = append(closers, u.Close)
			used[p] = true
			return p, nil
		}
		return 0, errors.New("no free port on " + ip)
	}
	out := make([]AgentPorts, len(ips))
	for i, ip := range ips {
		var ps [7]int
		for j := range ps {
			p, err := pick(ip)
			if err != nil {
				return nil, err
			}
			ps[j] = p
		}
		out[i] = AgentPorts{HTTP: ps[0], DNS: ps[1], Server: ps[2], SerfLAN: ps[3], SerfWAN: ps[4], GRPC: ps[5], GRPCTLS: ps[6]}
	}
	return out, nil
}
