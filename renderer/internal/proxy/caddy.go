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

	supervised // Exited, Stop
}

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
		up:      func(*child) bool { return c.Verify(ctx) == nil },
	})
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
