package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// Caddy validates, runs and reloads Caddy through its admin API. Caddy
// loads a new config next to the running one and swaps only on success,
// and its /load answer is synchronous, so an error from `caddy reload` is a
// reliable "did not take"; Verify then asks the admin API for the config
// in force.
type Caddy struct {
	Bin       string
	Config    string // Caddyfile, or JSON if it ends in .json
	Admin     string // admin API address, host:port
	Timeout   time.Duration
	Supervise bool
	Log       *slog.Logger

	// MainConfig is the Caddyfile Caddy runs with, for ValidateSet when
	// Config is a file it imports; empty means Config.
	MainConfig string

	supervised // Exited; Stop is Caddy's own (caddy_runtime.go)

	rt caddyRuntime // the resolver that serves pools at runtime
}

// Supervised reports whether the proxy runs as our child; the supervisor
// needs to know before Start, when Exited is still nil.
func (c *Caddy) Supervised() bool { return c.Supervise }

// Name implements the reloader interface.
func (c *Caddy) Name() string { return "caddy" }

func (c *Caddy) timeout() time.Duration { return orDefault(c.Timeout) }

func (c *Caddy) adapter(path string) []string {
	if strings.HasSuffix(path, ".json") {
		return nil
	}
	return []string{"--adapter", "caddyfile"}
}

// Validate runs caddy validate on a staged config.
func (c *Caddy) Validate(ctx context.Context, path string) error {
	args := append([]string{"validate", "--config", path}, c.adapter(path)...)
	out, err := run(ctx, c.timeout(), c.Bin, args...)
	if err != nil {
		return &ValidationError{Proxy: "caddy", Path: path, Output: string(out), Err: err}
	}
	return nil
}

// Start runs caddy as our child (supervise) or checks its admin API.
func (c *Caddy) Start(ctx context.Context) error {
	c.syncRuntime(ctx) // the pools of the config it loads are served before it asks
	if !c.Supervise {
		if err := c.Verify(ctx); err != nil {
			c.Log.Warn("no running caddy to reload yet", "proxy", "caddy", "err", err)
		}
		return nil
	}
	return c.startSupervised(ctx, c.Log, c.timeout(), childSpec{
		proxy: "caddy", bin: c.Bin, config: c.Config, cfgFlag: "--config",
		args:    append([]string{"run", "--config", c.Config}, c.adapter(c.Config)...),
		stopSig: syscall.SIGINT, // graceful: Caddy drains its servers
		up:      func(ctx context.Context, _ *child) bool { return c.Verify(ctx) == nil },
	})
}

// Reload loads the live config through the admin API. Caddy applies it
// atomically: on error the old config keeps serving, and we say so. An
// admin API that does not answer right now (a timeout, a 5xx) is asked
// again until Timeout; only one that is not there at all makes an error
// that wraps ErrNotRunning.
func (c *Caddy) Reload(ctx context.Context) error {
	if c.Supervise && !c.running() {
		return fmt.Errorf("%w: caddy is not running as our child", ErrNotRunning)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	if err := retryTransient(ctx, "caddy admin API "+c.Admin, c.adminAnswers, c.classify); err != nil {
		return err
	}
	c.syncRuntime(ctx) // the resolver answers with the static upstreams it loads
	args := append([]string{"reload", "--force", "--config", c.Config, "--address", c.Admin}, c.adapter(c.Config)...)
	out, err := run(ctx, c.timeout(), c.Bin, args...)
	if err != nil {
		return &ReloadError{Proxy: "caddy", Output: string(out), Err: err}
	}
	return nil
}

// classify says what an admin API error means. For our own child we know
// whether Caddy lives; for an external one the connection must tell.
func (c *Caddy) classify(err error) errClass {
	var se *statusError
	switch {
	case errors.As(err, &se) && se.code < 500:
		return permanent // it answered, and will answer the same
	case c.Supervise && !c.running():
		return gone
	case c.Supervise:
		return transient
	}
	return classifyConn(err)
}

// statusError is an admin API answer other than 2xx.
type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("admin API answered %d %s: %s", e.code, http.StatusText(e.code), strings.TrimSpace(e.body))
}

// get asks the admin API for path and returns the body of a 2xx answer.
func (c *Caddy) get(ctx context.Context, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Admin+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req) // bounded by ctx, body read included
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, &statusError{code: resp.StatusCode, body: string(b)}
	}
	return b, nil
}

// adminAnswers checks that the admin API answers. A Caddy without a
// config (it answers "null") is running, and /load is what it needs.
func (c *Caddy) adminAnswers(ctx context.Context) error {
	_, err := c.get(ctx, "/config/")
	return err
}

// Verify checks that the admin API answers with a config.
func (c *Caddy) Verify(ctx context.Context) error {
	b, err := c.get(ctx, "/config/")
	if err != nil {
		return &ReloadError{Proxy: "caddy", Err: err}
	}
	if s := strings.TrimSpace(string(b)); s == "" || s == "null" {
		return &ReloadError{Proxy: "caddy", Output: string(b), Err: errors.New("admin API answered without a config")}
	}
	return nil
}
