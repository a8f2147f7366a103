package testenv

// The one way this package runs a Consul agent. StartConsul's dev agent
// and every agent of a Cluster are the same binary started the same way:
// placed on one loopback address with ports no other agent has, run with
// its output in a log file, killed by PID, and waited for until it knows a
// leader. Kept here once, a fix to any of that (a port that must be free
// for UDP too, a process that must not outlive the test binary) reaches
// both. What differs stays with each: dev mode or a data dir, the gossip
// tuning, the joins, and what "ready" means beyond a leader.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// portOff, as an agent's port, turns that listener off.
const portOff = -1

// agentLogTail is how much of an agent's log a failed test prints: enough
// for the last elections and member events, short enough that a cluster's
// seven agents do not bury the test's own output.
const agentLogTail = 4000

// agentKillWait bounds the wait for a killed agent to exit. SIGKILL ends
// it at once; the bound only keeps a test's cleanup from hanging on a
// process stuck in the kernel.
const agentKillWait = 10 * time.Second

// needConsul returns the consul binary, or stops the test (see Need).
func needConsul(t testing.TB) string {
	t.Helper()
	bin, err := ConsulBinaryPath()
	Need(t, err == nil, fmt.Sprintf("consul v%s: %v", ConsulVersion, err))
	return bin
}

// agentArgs is the start of an agent's command line: its node name, the
// address it binds, advertises and serves clients on, and its ports. The
// ports are flags, not HCL: freePortBut (consulsecure.go) looks for the
// ports already taken in the command line.
func agentArgs(node, ip string, p AgentPorts) []string {
	return []string{
		"agent", "-node", node,
		"-bind", ip, "-advertise", ip, "-client", ip,
		"-http-port", strconv.Itoa(p.HTTP),
		"-dns-port", strconv.Itoa(p.DNS),
		"-server-port", strconv.Itoa(p.Server),
		"-serf-lan-port", strconv.Itoa(p.SerfLAN),
		"-serf-wan-port", strconv.Itoa(p.SerfWAN),
		"-grpc-port", strconv.Itoa(p.GRPC),
		"-grpc-tls-port", strconv.Itoa(p.GRPCTLS),
	}
}

// agentLabel names an agent in messages.
func agentLabel(node, addr string) string {
	return "consul agent " + node + " at " + addr
}

// agentAddr is the agent's HTTP address.
func agentAddr(ip string, p AgentPorts) string {
	return net.JoinHostPort(ip, strconv.Itoa(p.HTTP))
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

// agentClient is an API client of the agent at addr, with the function
// that closes the client's idle connections.
func agentClient(addr string) (*api.Client, func(), error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, nil, err
	}
	return client, cfg.Transport.CloseIdleConnections, nil
}

// knowsLeader fails until the agent behind client names a raft leader,
// the first thing an agent needs before it can answer for the catalog.
func knowsLeader(client *api.Client) error {
	leader, err := client.Status().Leader()
	if err != nil {
		return err
	}
	if leader == "" {
		return errors.New("no leader yet")
	}
	return nil
}

// agentProcess is an agent's command line and, while it runs, its process.
// It can be started again after a kill with the same command line: same
// node, address and ports, so the agent comes back as the same member.
type agentProcess struct {
	label   string // "consul agent NODE at ADDR", for messages
	bin     string
	args    []string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// start runs the agent with its output appended to its log, so a restarted
// agent's log follows its earlier life, and returns its PID.
func (p *agentProcess) start() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return 0, errors.New(p.label + " already running")
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Pdeathsig: no agent outlives a crashed test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return 0, fmt.Errorf("start %s: %w", p.label, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	return cmd.Process.Pid, nil
}

// kill is kill -9 of the agent: no leave, an outage. It waits for the
// exit (see agentKillWait), so a start can bind the same ports again.
func (p *agentProcess) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(agentKillWait):
	}
	p.cmd = nil
}

func (p *agentProcess) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// pid is the agent's PID, 0 when it does not run.
func (p *agentProcess) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *agentProcess) readLog() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// killAtTestEnd kills the agent when the test ends and, if the test
// failed, prints the tail of the agent's log: what the agent said is often
// the only clue to why a test timed out waiting on Consul.
func (p *agentProcess) killAtTestEnd(t testing.TB) {
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", p.label, tailFile(p.logPath, agentLogTail))
		}
	})
}

// waitReady polls, up to timeout, until the agent runs, knows a leader and
// isMember finds it where the caller needs it (in the catalog, or counted
// healthy). On failure the error carries the log's tail, for callers
// without a test to print it (benchmarks).
func (p *agentProcess) waitReady(timeout time.Duration, client *api.Client, isMember func() error) error {
	err := WaitFor(timeout, func() error {
		if !p.running() {
			return errors.New("exited")
		}
		if err := knowsLeader(client); err != nil {
			return err
		}
		return isMember()
	})
	if err != nil {
		return fmt.Errorf("%s not ready: %w\n%s", p.label, err, tailFile(p.logPath, 2000))
	}
	return nil
}
