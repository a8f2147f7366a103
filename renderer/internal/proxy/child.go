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
