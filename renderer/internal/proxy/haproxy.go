package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/renderer/haproxyproc"
)

// HAProxy validates, runs and reloads an HAProxy in master-worker mode
// (-W) with a master CLI socket (-S). Reload sends "reload" to the master
// CLI, which hands the listeners to the new worker without dropping a
// connection; Verify reads "show proc" until a worker the master did not
// have before is listed and the master's failed-reload count is unchanged.
type HAProxy struct {
	Bin       string
	Config    string // the live config file (-f)
	Socket    string // master CLI socket (-S); default haproxy-master.sock next to Config
	Timeout   time.Duration
	Supervise bool
	Log       *slog.Logger

	// Files is every -f of the running configuration, in order (a
	// directory too), for ValidateSet; empty means Config alone.
	Files []string

	supervised // Exited, Stop
	before     map[int]bool
	failedPrev int
}

// Supervised reports whether the proxy runs as our child; the supervisor
// needs to know before Start, when Exited is still nil.
func (h *HAProxy) Supervised() bool { return h.Supervise }

// Name implements the reloader interface.
func (h *HAProxy) Name() string { return "haproxy" }

func (h *HAProxy) timeout() time.Duration { return orDefault(h.Timeout) }

func (h *HAProxy) socket() string {
	if h.Socket != "" {
		return h.Socket
	}
	return filepath.Join(filepath.Dir(h.Config), "haproxy-master.sock")
}

// Validate runs haproxy -c on a staged config (it does not bind ports).
func (h *HAProxy) Validate(ctx context.Context, path string) error {
	out, err := run(ctx, h.timeout(), h.Bin, "-c", "-q", "-f", path)
	if err != nil {
		return &ValidationError{Proxy: "haproxy", Path: path, Output: string(out), Err: err}
	}
	return nil
}

// Start runs HAProxy as our child in master-worker mode (supervise), or
// checks that the master CLI answers (external).
func (h *HAProxy) Start(ctx context.Context) error {
	if !h.Supervise {
		if _, err := h.showProc(ctx); err != nil {
			h.Log.Warn("no running haproxy master to reload yet", "proxy", "haproxy", "err", err)
		}
		return nil
	}
	return h.startSupervised(ctx, h.Log, h.timeout(), childSpec{
		proxy: "haproxy", bin: h.Bin, config: h.Config, cfgFlag: "-f",
		args:       h.startArgs(),
		stopSig:    syscall.SIGUSR1, // soft stop: workers finish their connections
		resendStop: true,            // lost while the master re-executes
		up: func(ctx context.Context, _ *child) bool {
			p, err := h.showProc(ctx)
			return err == nil && len(p.workers) > 0
		},
	})
}

// startArgs runs the master with every -f of the configuration, in order:
// a reload re-reads the same list.
func (h *HAProxy) startArgs() []string {
	args := []string{"-W", "-S", h.socket() + ",mode,600"}
	for _, f := range h.files() {
		args = append(args, "-f", f)
	}
	return args
}

// Reload asks the master to reload through its CLI. A master that does
// not answer right now (it refuses while it re-executes for the previous
// reload, or is slow) is asked again until Timeout; only a master that is
// not there at all makes an error that wraps ErrNotRunning.
func (h *HAProxy) Reload(ctx context.Context) error {
	if h.Supervise && !h.running() {
		return fmt.Errorf("%w: haproxy is not running as our child", ErrNotRunning)
	}
	ctx, cancel := context.WithTimeout(ctx, h.timeout())
	defer cancel()
	var p proc
	err := retryTransient(ctx, "haproxy master CLI show proc", func(ctx context.Context) (err error) {
		p, err = h.showProc(ctx)
		return err
	}, h.classify)
	if err != nil {
		return err
	}
	h.before = p.workers
	h.failedPrev = p.failed
	return retryTransient(ctx, "haproxy master CLI reload", h.sendReload, h.classify)
}

// classify says what a master CLI error means. For our own child we know
// whether the master lives; for an external one the socket must tell.
func (h *HAProxy) classify(err error) errClass {
	if h.Supervise {
		if !h.running() {
			return gone
		}
		return transient
	}
	return classifyConn(err)
}

// sendReload sends "reload". The master closes the connection (or resets
// it) when it re-executes: no answer is expected, none would prove
// anything, and Verify tells whether the reload took.
func (h *HAProxy) sendReload(ctx context.Context) error {
	conn, err := h.send(ctx, "reload")
	if err != nil {
		return err
	}
	defer conn.Close()
	_, _ = io.Copy(io.Discard, conn) // until the master closes; bounded by the deadline
	return nil
}

// Verify waits for a new worker in "show proc"; a grown failed-reload
// count means the new config did not load and the old worker still serves.
func (h *HAProxy) Verify(ctx context.Context) error {
	var last proc
	return awaitReload(ctx, "haproxy", h.timeout(), func(ctx context.Context) (bool, error) {
		p, err := h.showProc(ctx)
		if err != nil {
			// The master is busy re-executing; ask again.
			return false, nil
		}
		last = p
		if p.failed > h.failedPrev {
			return false, fmt.Errorf("master counts %d failed reloads (was %d)", p.failed, h.failedPrev)
		}
		return newGeneration(h.before, p.workers), nil
	}, func() string { return last.raw })
}

type proc struct {
	master  int          // the master's pid; 0 if the answer had no master line
	workers map[int]bool // current (not old) workers
	failed  int
	raw     string
}

func (h *HAProxy) showProc(ctx context.Context) (proc, error) {
	out, err := h.cli(ctx, "show proc")
	if err != nil {
		return proc{}, err
	}
	p := parseShowProc(out)
	if p.master == 0 {
		// A connection closed before the answer (a master going into
		// re-exec) reads as an empty answer, not an error.
		return proc{}, fmt.Errorf("show proc answer has no master line: %q", out)
	}
	return p, nil
}

// parseShowProc reads the master CLI's "show proc" table with the parser
// the membership benchmark shares (see haproxyproc), and keeps the answer
// for error messages.
func parseShowProc(out string) proc {
	t := haproxyproc.Parse(out)
	return proc{master: t.Master, workers: t.Workers, failed: t.Failed, raw: out}
}

// cli sends one command to the master socket and returns the answer.
func (h *HAProxy) cli(ctx context.Context, cmd string) (string, error) {
	conn, err := h.send(ctx, cmd)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	b, err := io.ReadAll(conn)
	return string(b), err
}

// send dials the master socket and writes one command. The connection
// carries a deadline (ctx's, at most Timeout away), so reading the answer
// cannot hang.
func (h *HAProxy) send(ctx context.Context, cmd string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout())
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", h.socket())
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		conn.Close()
		return nil, err
	}
	// Half-close: the master answers and closes once it has read the
	// whole request.
	if uc, ok := conn.(*net.UnixConn); ok {
		_ = uc.CloseWrite()
	}
	return conn, nil
}
