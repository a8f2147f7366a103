package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// child is a proxy process we run in the foreground and own. Its waiter
// goroutine is owned by the child and ends when the process exits; stop
// waits for it.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit error, valid after done
	logs sync.WaitGroup
}

// startChild runs bin in its own process group, so a Ctrl-C on our terminal
// reaches only us and we decide how the proxy stops; Pdeathsig stops it
// gracefully if we are killed, so a restarted renderer does not find an
// orphan holding its ports.
func startChild(log *slog.Logger, proxy string, deathSig syscall.Signal, bin string, args ...string) (*child, error) {
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig}
	c := &child{cmd: cmd, done: make(chan struct{})}
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	if err := Start(cmd); err != nil {
		pw.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	c.logs.Add(1)
	go func() {
		defer c.logs.Done()
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			log.Info("proxy output", "proxy", proxy, "line", sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		c.err = cmd.Wait()
		forget(cmd.Process.Pid)
		pw.Close()
		c.logs.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// signal sends sig to the process (not its group: the master manages its
// workers).
func (c *child) signal(sig syscall.Signal) error {
	select {
	case <-c.done:
		return ErrNotRunning
	default:
	}
	return c.cmd.Process.Signal(sig)
}

// stop sends sig, waits for the exit up to grace, then kills the whole
// process group so no worker is left behind.
func (c *child) stop(ctx context.Context, sig syscall.Signal, grace time.Duration) error {
	_ = c.signal(sig)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
	case <-t.C:
	}
	_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
	<-c.done
	return fmt.Errorf("%s did not stop within %s: killed", c.cmd.Path, grace)
}

// supervised is the supervise-mode half every proxy shares: run the proxy
// as our child, wait until it serves, report its exit, stop it gracefully.
// A proxy embeds it and says, in a childSpec, only what is its own.
type supervised struct {
	child   *child
	stopSig syscall.Signal
}

// childSpec says how to run one proxy as our child.
type childSpec struct {
	proxy   string         // "nginx", for logs and errors
	bin     string         // binary
	args    []string       // its arguments
	config  string         // the live config, for logs and errors
	cfgFlag string         // the flag that names it ("-c"), for errors
	stopSig syscall.Signal // lets the proxy finish its requests and exit
	up      func(c *child) bool
}

// startSupervised starts the proxy as our child and polls spec.up until it
// serves. A child that exits or is not up within timeout is stopped.
func (s *supervised) startSupervised(ctx context.Context, log *slog.Logger, timeout time.Duration, spec childSpec) error {
	c, err := startChild(log, spec.proxy, spec.stopSig, spec.bin, spec.args...)
	if err != nil {
		return err
	}
	s.child, s.stopSig = c, spec.stopSig
	err = pollUntil(ctx, timeout, func() (bool, error) {
		select {
		case <-c.done:
			return false, fmt.Errorf("%s exited at start: %v", spec.proxy, c.err)
		default:
		}
		return spec.up(c), nil
	})
	if err != nil {
		_ = c.stop(ctx, spec.stopSig, timeout)
		s.child = nil
		return fmt.Errorf("start %s %s %s: %w", spec.proxy, spec.cfgFlag, spec.config, err)
	}
	log.Info("proxy started", "proxy", spec.proxy, "pid", c.pid(), "config", spec.config)
	return nil
}

// Exited is closed when a supervised proxy has exited; nil when the proxy
// is not our child.
func (s *supervised) Exited() <-chan struct{} {
	if s.child == nil {
		return nil
	}
	return s.child.done
}

// Stop stops a supervised proxy with its graceful signal (workers finish
// their requests), killing it after StopGrace. An external proxy is not
// ours to stop.
func (s *supervised) Stop(ctx context.Context) error {
	if s.child == nil {
		return nil
	}
	err := s.child.stop(ctx, s.stopSig, StopGrace)
	s.child = nil
	return err
}
