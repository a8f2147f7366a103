package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Nginx validates, runs and reloads an nginx that uses Prefix as its prefix
// dir and Config as its main config file.
//
// Reload sends SIGHUP to the master; Verify then waits for a worker the
// master did not have before. nginx answers a failed reload (a port it
// cannot bind, a file it cannot open) by logging and keeping the old
// workers, so a new worker generation is the proof that the reload took.
type Nginx struct {
	Bin       string        // nginx binary, "nginx" = from PATH
	Prefix    string        // -p; relative paths in the config resolve here
	Config    string        // the live config file (-c)
	PidFile   string        // external mode; default: the config's pid directive
	Timeout   time.Duration // per nginx command, and for a reload to take
	Supervise bool          // run nginx as our child instead of signalling one
	Log       *slog.Logger

	// MainConfig is the main config nginx loads, for ValidateSet when
	// Config is a fragment it includes. Empty: Config when it is itself a
	// main config, else nginx's compiled-in one (NginxConfPath). Leave
	// Prefix empty then, unless nginx runs with -p: a set's test uses the
	// compiled-in prefix, like the nginx it stands for.
	MainConfig string
	// CompiledPrefix: no -p anywhere, nginx uses its compiled-in prefix,
	// as a distribution's nginx runs (Debian's load_module modules/...
	// lines resolve against it). Set when Prefix is empty and nginx loads
	// a main config of its own, not one we render.
	CompiledPrefix bool

	supervised // Exited, Stop
	master     int
	before     map[int]bool
	errLog     string
	errLogSize int64
}

// Supervised reports whether the proxy runs as our child; the supervisor
// needs to know before Start, when Exited is still nil.
func (n *Nginx) Supervised() bool { return n.Supervise }

// Name implements the reloader interface.
func (n *Nginx) Name() string { return "nginx" }

func (n *Nginx) timeout() time.Duration { return orDefault(n.Timeout) }

// base is the argument list every nginx invocation shares. "-e stderr"
// keeps nginx from opening its compiled-in /var/log error log before it has
// read our config: the prefix dir is all it may need.
func (n *Nginx) base(config string) []string {
	if n.Prefix == "" && n.CompiledPrefix {
		return []string{"-e", "stderr", "-c", config}
	}
	prefix := n.Prefix
	if prefix == "" {
		prefix = filepath.Dir(n.Config)
	}
	return []string{"-e", "stderr", "-p", strings.TrimSuffix(prefix, "/") + "/", "-c", config}
}

// Validate runs nginx -t on a staged config. The staged file lives next to
// the live one, so relative includes resolve the same way.
func (n *Nginx) Validate(ctx context.Context, path string) error {
	out, err := run(ctx, n.timeout(), n.Bin, append([]string{"-t", "-q"}, n.base(path)...)...)
	if err != nil {
		return &ValidationError{Proxy: "nginx", Path: path, Output: string(out), Err: err}
	}
	return nil
}

// Start runs nginx in the foreground as our child (supervise mode) and
// waits until its first workers are up. In external mode it only checks
// that a master is running, and says so in the log if not.
func (n *Nginx) Start(ctx context.Context) error {
	if !n.Supervise {
		if _, err := n.masterPID(); err != nil {
			n.Log.Warn("no running nginx to reload yet; it will load the config when it starts",
				"proxy", "nginx", "err", err)
		}
		return nil
	}
	return n.startSupervised(ctx, n.Log, n.timeout(), childSpec{
		proxy: "nginx", bin: n.Bin, config: n.Config, cfgFlag: "-c",
		args:    append(n.base(n.Config), "-g", "daemon off; master_process on;"),
		stopSig: syscall.SIGQUIT, // workers finish their requests
		up:      func(_ context.Context, c *child) bool { return len(children(c.pid())) > 0 },
	})
}

// Reload asks the master to load the live config. Verify tells whether it
// took.
func (n *Nginx) Reload(ctx context.Context) error {
	pid, err := n.masterPID()
	if err != nil {
		return err
	}
	n.master = pid
	n.before = children(pid)
	n.errLog = n.errorLogPath()
	n.errLogSize = fileSize(n.errLog)
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("signal nginx master %d: %w", pid, err)
	}
	return nil
}

// Verify waits until the master runs a worker it did not have before the
// reload. On timeout it returns a ReloadError with the error log lines the
// reload produced.
func (n *Nginx) Verify(ctx context.Context) error {
	return awaitReload(ctx, "nginx", n.timeout(), func(context.Context) (bool, error) {
		if !alive(n.master) {
			return false, fmt.Errorf("nginx master %d is gone", n.master)
		}
		return newGeneration(n.before, children(n.master)), nil
	}, func() string { return tailErrors(n.errLog, n.errLogSize) })
}

func (n *Nginx) masterPID() (int, error) {
	if n.Supervise {
		if !n.running() {
			return 0, fmt.Errorf("%w: nginx is not running as our child", ErrNotRunning)
		}
		return n.child.pid(), nil
	}
	path := n.PidFile
	if path == "" {
		path = n.directivePath("pid", "logs/nginx.pid")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("%w: pid file: %w", ErrNotRunning, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%w: pid file %s is empty or invalid", ErrNotRunning, path)
	}
	if !alive(pid) {
		return 0, fmt.Errorf("%w: pid %d from %s", ErrNotRunning, pid, path)
	}
	return pid, nil
}

func (n *Nginx) errorLogPath() string {
	return n.directivePath("error_log", "logs/error.log")
}

// directivePath reads a top-level path directive (pid, error_log) from the
// live config and resolves it against the prefix, as nginx does.
func (n *Nginx) directivePath(name, def string) string {
	v := def
	if b, err := os.ReadFile(n.Config); err == nil {
		re := regexp.MustCompile(`(?m)^\s*` + name + `\s+([^;\s]+)`)
		if m := re.FindSubmatch(b); m != nil {
			v = string(m[1])
		}
	}
	if filepath.IsAbs(v) || v == "stderr" {
		return v
	}
	prefix := n.Prefix
	if prefix == "" {
		prefix = filepath.Dir(n.Config)
	}
	return filepath.Join(prefix, v)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// tailErrors returns the error-level lines written to path after offset,
// at most 4 KiB of them.
func tailErrors(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	var out []string
	for _, l := range bytes.Split(b, []byte("\n")) {
		s := string(l)
		if strings.Contains(s, "[emerg]") || strings.Contains(s, "[alert]") || strings.Contains(s, "[crit]") || strings.Contains(s, "[error]") {
			out = append(out, s)
		}
	}
	s := strings.Join(out, "\n")
	if len(s) > 4096 {
		s = s[len(s)-4096:]
	}
	return s
}
