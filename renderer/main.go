// Command renderer watches the Consul catalog through consul-template,
// renders proxy configs, validates them with the proxy, swaps them in
// atomically, and reloads nginx, HAProxy or Caddy, verifying the reload.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/switchyard/switchyard/renderer/internal/supervise"
)

// Exit codes, documented in the README.
const (
	exitOK       = 0
	exitUsage    = 1 // bad flags or config, template parse error
	exitRejected = 2 // once/plan: a rendered config was rejected
	exitReload   = 3 // once: a reload did not take (rolled back)
	exitRuntime  = 4 // proxy could not be kept alive, once timed out
	exitHeld     = 5 // once: the stale guard held a render; the live file was kept
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newApp(os.Stdout, os.Stderr).RunContext(ctx, os.Args)
	stop()
	if err == nil {
		return
	}
	code := exitUsage // flag parsing errors
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		code = ec.ExitCode()
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(code)
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:      "renderer",
		Usage:     "render proxy configs from Consul; validate, swap, reload, verify",
		Writer:    stdout,
		ErrWriter: stderr,
		Flags:     flags(),
		// main decides how to exit; tests call RunContext and read the code.
		ExitErrHandler: func(*cli.Context, error) {},
		Action: func(c *cli.Context) error {
			return run(c, modeDaemon)
		},
		Commands: []*cli.Command{
			{
				Name:  "once",
				Usage: "render, validate, swap and reload once, then exit (0 ok, 1 bad config or template, 2 rejected, 3 reload failed, 4 timeout, 5 held by the stale guard)",
				Flags: append(flags(), &cli.DurationFlag{Name: "timeout", Value: time.Minute, EnvVars: []string{"RENDERER_ONCE_TIMEOUT"}, Usage: "give up waiting for Consul data after this long"}),
				Action: func(c *cli.Context) error {
					return run(c, modeOnce)
				},
			},
			{
				Name:  "plan",
				Usage: "print the diff against the live files and the validation verdict; change nothing (0 valid, 2 rejected)",
				Flags: append(flags(), &cli.DurationFlag{Name: "timeout", Value: time.Minute, EnvVars: []string{"RENDERER_ONCE_TIMEOUT"}, Usage: "give up waiting for Consul data after this long"}),
				Action: func(c *cli.Context) error {
					return run(c, modePlan)
				},
			},
		},
	}
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// exitFor maps a Run error to an exit code.
func exitFor(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, supervise.ErrRejected):
		return cli.Exit("renderer: "+err.Error(), exitRejected)
	case errors.Is(err, supervise.ErrReloadFailed):
		return cli.Exit("renderer: "+err.Error(), exitReload)
	case errors.Is(err, supervise.ErrHeld):
		return cli.Exit("renderer: "+err.Error(), exitHeld)
	case errors.Is(err, errSetup):
		return cli.Exit("renderer: "+err.Error(), exitUsage)
	}
	return cli.Exit("renderer: "+err.Error(), exitRuntime)
}
