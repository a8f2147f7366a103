// Package proxy drives the proxies the renderer feeds (nginx, HAProxy,
// Caddy, or any validator command): it validates a staged config with the
// proxy itself, reloads a running proxy, and verifies that the reload took,
// because a reload command's exit status proves nothing (COMPAT.md §3).
//
// Each proxy works in one of two modes: external (signal a proxy someone
// else runs) or supervised (run it as our child, started only after the
// first complete render).
package proxy

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/prio"
)

// DefaultTimeout bounds every command we run against a proxy binary.
const DefaultTimeout = 10 * time.Second

// orDefault is a configured timeout, or DefaultTimeout when unset.
func orDefault(timeout time.Duration) time.Duration {
	if timeout <= 0 {
		return DefaultTimeout
	}
	return timeout
}

// StopGrace is how long a supervised proxy gets to finish its requests
// when we stop it, before its process group is killed.
var StopGrace = 15 * time.Second

// ValidationError is returned when the proxy rejects a config. Output is what
// the proxy printed: it is logged and kept, because it is the only useful
// explanation an operator gets.
type ValidationError struct {
	Proxy  string
	Path   string
	Output string
	Err    error
}

func (e *ValidationError) Error() string {
	out := strings.TrimSpace(e.Output)
	if out == "" {
		return fmt.Sprintf("%s rejected %s: %v", e.Proxy, e.Path, e.Err)
	}
	return fmt.Sprintf("%s rejected %s: %v: %s", e.Proxy, e.Path, e.Err, out)
}

func (e *ValidationError) Unwrap() error { return e.Err }

// ReloadError says a reload did not take: the old config is still serving.
type ReloadError struct {
	Proxy  string
	Output string // proxy output or error-log lines that explain it
	Err    error
}

func (e *ReloadError) Error() string {
	out := strings.TrimSpace(e.Output)
	if out == "" {
		return fmt.Sprintf("%s reload did not take: %v", e.Proxy, e.Err)
	}
	return fmt.Sprintf("%s reload did not take: %v: %s", e.Proxy, e.Err, out)
}

func (e *ReloadError) Unwrap() error { return e.Err }

// ErrNotRunning is returned by Reload when there is no proxy to signal. It
// has a NotRunning method, so callers recognise it without importing us.
var ErrNotRunning error = notRunning{}

type notRunning struct{}

func (notRunning) Error() string    { return "proxy is not running" }
func (notRunning) NotRunning() bool { return true }

// run executes a command with a timeout and returns its combined output.
// WaitDelay makes sure a child that forks a grandchild holding our pipes
// cannot hang us past the timeout.
func run(ctx context.Context, timeout time.Duration, bin string, args ...string) ([]byte, error) {
	timeout = orDefault(timeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// A validator is often a shell running other programs: on timeout the
	// whole process group goes, or a hung grandchild would outlive every
	// render that timed out (and hold our output pipe until WaitDelay).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := Start(cmd)
	if err == nil {
		prio.Lower(ctx, cmd.Process.Pid)
		err = Wait(cmd)
	}
	if ctx.Err() != nil && err != nil {
		err = fmt.Errorf("%s timed out after %s: %w", bin, timeout, err)
	}
	return out.Bytes(), err
}

// pollUntil calls fn until it reports done, fails, or ctx ends. The
// interval starts at 1ms and doubles up to 20ms: a reload usually shows
// within a few milliseconds, and the supervisor waits for the verdict, but
// a slow proxy must not be read from /proc or its socket in a busy loop.
//
// fn gets the poll's own context, so a check that talks to the proxy ends
// with the poll instead of running past it. A check cut short that way
// fails with whatever its socket said ("i/o timeout"); the poll reports
// it as the poll's own end, wrapping both, so callers that tell a timeout
// from a failure (a drain that took too long) see the timeout.
func pollUntil(ctx context.Context, timeout time.Duration, fn func(ctx context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTimer(time.Hour) // reset before every wait
	defer t.Stop()
	for interval := time.Millisecond; ; interval = min(2*interval, 20*time.Millisecond) {
		done, err := fn(ctx)
		if err != nil {
			if end := ended(ctx); end != nil {
				return fmt.Errorf("%w: %w", end, err)
			}
			return err
		}
		if done {
			return nil
		}
		t.Reset(interval)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// ended reports why ctx is over, counting a deadline that has passed
// before ctx's timer marked it done: a socket given the same deadline may
// time out first.
func ended(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// awaitReload is the shared half of every Verify: poll took until the new
// config shows in the running proxy, and turn a failure or a timeout into
// a ReloadError with what output (error-log lines, the master's process
// table) says about it, read only then.
func awaitReload(ctx context.Context, proxy string, timeout time.Duration, took func(ctx context.Context) (bool, error), output func() string) error {
	if err := pollUntil(ctx, timeout, took); err != nil {
		return &ReloadError{Proxy: proxy, Output: output(), Err: err}
	}
	return nil
}

// newGeneration reports whether now holds a process that before did not:
// the proof nginx and HAProxy give that a reload took.
func newGeneration(before, now map[int]bool) bool {
	for pid := range now {
		if !before[pid] {
			return true
		}
	}
	return false
}
