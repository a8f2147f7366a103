package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Bounds on the clean-up after a master exits. They are short because
// Exited must fire within a second of the master's death: the supervisor
// restarts the proxy on it, and the new master needs the ports the old
// generation's workers hold.
var (
	orphanGrace = 300 * time.Millisecond // graceful signal to SIGKILL
	killWait    = 500 * time.Millisecond // SIGKILL to gone
	logDrain    = time.Second            // Stop waits this long for the last log lines
)

// child is a proxy process we run in the foreground and own. Its waiter
// goroutine is owned by the child and ends when the process exits; stop
// waits for it.
type child struct {
	cmd        *exec.Cmd
	stopSig    syscall.Signal
	resendStop bool          // repeating stopSig is safe and may be needed
	done       chan struct{} // closed when the process has exited and its group is gone
	err        error         // exit error, valid after done
	logs       chan struct{} // closed when nobody holds the output pipe any more

	mu   sync.Mutex
	tail []string // the last lines of output, for an error at start
}

// tailLines is how many output lines a failed start quotes.
const tailLines = 5

// startChild runs bin in its own process group, so a Ctrl-C on our terminal
// reaches only us and we decide how the proxy stops; Pdeathsig stops it
// gracefully if we are killed, so a restarted renderer does not find an
// orphan holding its ports.
//
// Its output goes to an *os.File pipe, not an io.Writer: exec then hands
// the file to the process and starts no copy goroutine, so Wait returns
// when the process exits. With a writer, Wait would also wait for every
// worker that inherited the pipe, and a master killed under live workers
// would never be seen to die.
func startChild(log *slog.Logger, proxy string, stopSig syscall.Signal, bin string, args ...string) (*child, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: output pipe: %w", bin, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: stopSig}
	cmd.Stdout, cmd.Stderr = pw, pw
	err = Start(cmd)
	// The process has its own copy now; ours would keep the reader from
	// ever seeing EOF.
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	c := &child{cmd: cmd, stopSig: stopSig, done: make(chan struct{}), logs: make(chan struct{})}
	go c.copyLogs(log, proxy, pr)
	go c.wait()
	return c, nil
}

// copyLogs logs the proxy's output until every holder of the pipe has
// exited. It says nothing about liveness: workers may outlive the master.
func (c *child) copyLogs(log *slog.Logger, proxy string, pr *os.File) {
	defer close(c.logs)
	defer pr.Close()
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		log.Info("proxy output", "proxy", proxy, "line", sc.Text())
		c.mu.Lock()
		c.tail = append(c.tail, sc.Text())
		if len(c.tail) > tailLines {
			c.tail = c.tail[1:]
		}
		c.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, pr) // a line too long for the scanner
}

// wait collects the master's exit, then stops what is left of its
// generation before it reports the exit, so whoever restarts the proxy on
// done finds the ports free.
func (c *child) wait() {
	c.err = Wait(c.cmd)
	stopGroup(c.pid(), c.stopSig)
	close(c.done)
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// lastOutput quotes the last lines the process wrote, which say why it
// did not start ("bind() to ... failed"), once its output has ended or
// after logDrain.
func (c *child) lastOutput() string {
	select {
	case <-c.logs:
	case <-time.After(logDrain):
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.tail) == 0 {
		return ""
	}
	return ": " + strings.Join(c.tail, " | ")
}

// exited reports whether done is closed.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process (not its group: the master manages its
// workers).
func (c *child) signal(sig syscall.Signal) error {
	if c.exited() {
		return ErrNotRunning
	}
	if err := c.cmd.Process.Signal(sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return ErrNotRunning
		}
		return err
	}
	return nil
}

// stop sends the graceful signal, waits for the exit up to grace, then
// kills the whole process group so no worker is left behind. Every wait
// is bounded. With resendStop the signal is repeated every second: an
// HAProxy master loses a SIGUSR1 that arrives while it re-executes after a
// failed reload.
func (c *child) stop(ctx context.Context, grace time.Duration) error {
	defer c.drainLogs()
	_ = c.signal(c.stopSig)
	t := time.NewTimer(grace)
	defer t.Stop()
	var resend <-chan time.Time // nil: never
	if c.resendStop {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		resend = tick.C
	}
	why := fmt.Sprintf("did not stop within %s", grace)
wait:
	for {
		select {
		case <-c.done:
			return nil
		case <-resend:
			_ = c.signal(c.stopSig)
		case <-ctx.Done():
			why = fmt.Sprintf("stop abandoned (%v)", ctx.Err())
			break wait
		case <-t.C:
			break wait
		}
	}
	_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
	select {
	case <-c.done:
		return fmt.Errorf("%s %s: killed", c.cmd.Path, why)
	case <-time.After(2 * killWait):
		return fmt.Errorf("%s %s, and pid %d survived SIGKILL for %s", c.cmd.Path, why, c.pid(), 2*killWait)
	}
}

// drainLogs gives the output reader a moment to log the proxy's last
// lines, so they come before our own "stopped".
func (c *child) drainLogs() {
	select {
	case <-c.logs:
	case <-time.After(logDrain):
	}
}

// stopGroup stops the processes left in the group pgid after its leader,
// the master, has exited: nginx workers outlive a master killed with
// SIGKILL and keep its listening sockets. They get sig (finish what you
// are doing), orphanGrace to exit, then SIGKILL.
func stopGroup(pgid int, sig syscall.Signal) {
	if len(groupMembers(pgid)) == 0 {
		return
	}
	_ = syscall.Kill(-pgid, sig)
	if groupGone(pgid, orphanGrace) {
		return
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	groupGone(pgid, killWait)
}

// groupGone waits up to timeout until no live process is left in the
// group pgid. Zombies do not count: they hold no socket, and as PID 1 we
// reap them in ReapOrphans.
func groupGone(pgid int, timeout time.Duration) bool {
	err := pollUntil(context.Background(), timeout, func(context.Context) (bool, error) {
		return len(groupMembers(pgid)) == 0, nil
	})
	return err == nil
}

// supervised is the supervise-mode half every proxy shares: run the proxy
// as our child, wait until it serves, report its exit, stop it gracefully.
// A proxy embeds it and says, in a childSpec, only what is its own. It is
// used from one goroutine, the supervisor's.
type supervised struct {
	child *child // the current child: the last one Start ran
}

// childSpec says how to run one proxy as our child.
type childSpec struct {
	proxy   string         // "nginx", for logs and errors
	bin     string         // binary
	args    []string       // its arguments
	config  string         // the live config, for logs and errors
	cfgFlag string         // the flag that names it ("-c"), for errors
	stopSig syscall.Signal // lets the proxy finish its requests and exit
	// resendStop repeats stopSig while we wait: for a proxy that may lose
	// it, and only where a second one is harmless (a second SIGINT makes
	// Caddy quit at once).
	resendStop bool
	up         func(ctx context.Context, c *child) bool
}

// running reports whether the current child is alive.
func (s *supervised) running() bool {
	return s.child != nil && !s.child.exited()
}

// startSupervised starts the proxy as our child and polls spec.up until it
// serves. A child that exits or is not up within timeout is stopped; it
// stays the current child, so Exited reports the failed start as closed.
func (s *supervised) startSupervised(ctx context.Context, log *slog.Logger, timeout time.Duration, spec childSpec) error {
	if s.running() {
		return fmt.Errorf("start %s: already running as pid %d", spec.proxy, s.child.pid())
	}
	c, err := startChild(log, spec.proxy, spec.stopSig, spec.bin, spec.args...)
	if err != nil {
		return err
	}
	c.resendStop = spec.resendStop
	s.child = c
	err = pollUntil(ctx, timeout, func(ctx context.Context) (bool, error) {
		if c.exited() {
			return false, fmt.Errorf("%s exited at start: %v", spec.proxy, c.err)
		}
		return spec.up(ctx, c), nil
	})
	if err != nil {
		_ = c.stop(ctx, timeout)
		return fmt.Errorf("start %s %s %s: %w%s", spec.proxy, spec.cfgFlag, spec.config, err, c.lastOutput())
	}
	log.Info("proxy started", "proxy", spec.proxy, "pid", c.pid(), "config", spec.config)
	return nil
}

// Exited returns the exit channel of the current child: the one the last
// Start ran. It is closed once that process has exited and what was left
// of its process group (workers of a killed master) has been stopped, so
// the ports are free for the next Start. Once closed it stays closed, also
// after Stop or a failed Start, until Start runs a new child; callers must
// call Exited again after each Start. It is nil when the proxy is not our
// child (external mode) or before the first Start.
func (s *supervised) Exited() <-chan struct{} {
	if s.child == nil {
		return nil
	}
	return s.child.done
}

// Stop stops a supervised proxy with its graceful signal (workers finish
// their requests), killing its process group after StopGrace. An external
// proxy is not ours to stop.
func (s *supervised) Stop(ctx context.Context) error {
	if s.child == nil {
		return nil
	}
	return s.child.stop(ctx, StopGrace)
}
