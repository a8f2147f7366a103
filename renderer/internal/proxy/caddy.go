package proxy

import (
	"context"
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

	child *child
}

// Name implements the reloader interface.
func (c *Caddy) Name() string { return "caddy" }

func (c *Caddy) timeout() time.Duration {
	if c.Timeout <= 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

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
	if !c.Supervise {
		if err := c.Verify(ctx); err != nil {
			c.Log.Warn("no running caddy to reload yet", "proxy", "caddy", "err", err)
		}
		return nil
	}
	args := append([]string{"run", "--config", c.Config}, c.adapter(c.Config)...)
	ch, err := startChild(c.Log, "caddy", syscall.SIGINT, c.Bin, args...)
	if err != nil {
		return err
	}
	c.child = ch
	err = pollUntil(ctx, c.timeout(), func() (bool, error) {
		select {
		case <-ch.done:
			return false, fmt.Errorf("caddy exited at start: %v", ch.err)
		default:
		}
		return c.Verify(ctx) == nil, nil
	})
	if err != nil {
		_ = ch.stop(ctx, syscall.SIGINT, c.timeout())
		c.child = nil
		return fmt.Errorf("start caddy --config %s: %w", c.Config, err)
	}
	c.Log.Info("proxy started", "proxy", "caddy", "pid", ch.pid(), "config", c.Config)
	return nil
}

// Exited is closed when a supervised caddy has exited; nil otherwise.
func (c *Caddy) Exited() <-chan struct{} {
	if c.child == nil {
		return nil
	}
	return c.child.done
}

// Stop stops a supervised caddy gracefully (SIGINT).
func (c *Caddy) Stop(ctx context.Context) error {
	if c.child == nil {
		return nil
	}
	err := c.child.stop(ctx, syscall.SIGINT, StopGrace)
	c.child = nil
	return err
}

// Reload loads the live config through the admin API. Caddy applies it
// atomically: on error the old config keeps serving, and we say so.
func (c *Caddy) Reload(ctx context.Context) error {
	if err := c.Verify(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrNotRunning, err)
	}
	args := append([]string{"reload", "--force", "--config", c.Config, "--address", c.Admin}, c.adapter(c.Config)...)
	out, err := run(ctx, c.timeout(), c.Bin, args...)
	if err != nil {
		return &ReloadError{Proxy: "caddy", Output: string(out), Err: err}
	}
	return nil
}

// Verify checks that the admin API answers with a config.
func (c *Caddy) Verify(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Admin+"/config/", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return &ReloadError{Proxy: "caddy", Err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK || len(strings.TrimSpace(string(b))) == 0 || strings.TrimSpace(string(b)) == "null" {
		return &ReloadError{Proxy: "caddy", Output: string(b), Err: fmt.Errorf("admin API answered %s", resp.Status)}
	}
	return nil
}
