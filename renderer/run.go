package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/consul-template/manager"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/renderer/internal/config"
	"github.com/switchyard/switchyard/renderer/internal/funcs"
	"github.com/switchyard/switchyard/renderer/internal/pipeline"
	"github.com/switchyard/switchyard/renderer/internal/proxy"
	"github.com/switchyard/switchyard/renderer/internal/status"
	"github.com/switchyard/switchyard/renderer/internal/supervise"
)

type mode int

const (
	modeDaemon mode = iota
	modeOnce
	modePlan
)

// errSetup marks errors found before anything started: exit code 1.
var errSetup = errors.New("setup")

func configFrom(c *cli.Context) (*config.Config, error) {
	cfg := &config.Config{
		Consul: config.Consul{
			Addr:            c.String("consul-addr"),
			Token:           c.String("consul-token"),
			TokenFile:       c.String("consul-token-file"),
			SSL:             c.Bool("consul-ssl"),
			SSLVerify:       c.Bool("consul-ssl-verify"),
			CACert:          c.String("consul-cacert"),
			ClientCert:      c.String("consul-client-cert"),
			ClientKey:       c.String("consul-client-key"),
			ServerName:      c.String("consul-tls-server-name"),
			RetryMaxBackoff: c.Duration("consul-retry-max-backoff"),
		},
		Proxy:                c.String("proxy"),
		ProxyMode:            c.String("proxy-mode"),
		NginxBin:             c.String("nginx-bin"),
		NginxPrefix:          c.String("nginx-prefix"),
		NginxPidFile:         c.String("nginx-pid-file"),
		HAProxyBin:           c.String("haproxy-bin"),
		HAProxySocket:        c.String("haproxy-socket"),
		CaddyBin:             c.String("caddy-bin"),
		CaddyAdmin:           c.String("caddy-admin"),
		ValidateCmd:          c.String("validate-cmd"),
		MinReloadGap:         c.Duration("min-reload-gap"),
		CommandTimeout:       c.Duration("command-timeout"),
		Keep:                 c.Int("keep"),
		MaxRemoval:           c.Float64("max-removal"),
		HoldDown:             c.Duration("hold-down"),
		AllowUnsafeFunctions: c.Bool("allow-unsafe-functions"),
	}
	var err error
	if cfg.WaitMin, cfg.WaitMax, err = config.ParseWait(c.String("wait")); err != nil {
		return nil, err
	}
	for _, spec := range c.StringSlice("template") {
		t, err := config.ParseTemplate(spec, cfg.Proxy)
		if err != nil {
			return nil, err
		}
		cfg.Templates = append(cfg.Templates, t)
	}
	if path := c.String("config"); path != "" {
		if err := cfg.LoadHCL(path, cfg.Proxy, c.IsSet("wait")); err != nil {
			return nil, err
		}
	}
	return cfg, cfg.Validate()
}

func run(c *cli.Context, m mode) error {
	log, err := newLogger(c.App.ErrWriter, c.String("log-level"), c.String("log-format"))
	if err != nil {
		return cli.Exit("renderer: "+err.Error(), exitUsage)
	}
	cfg, err := configFrom(c)
	if err != nil {
		return cli.Exit("renderer: "+err.Error(), exitUsage)
	}
	for _, w := range cfg.Warnings {
		log.Warn("config: " + w)
	}
	if m != modeDaemon {
		// once and plan signal an existing proxy, if any; they never own one.
		cfg.ProxyMode = config.ModeExternal
	}
	restore := supervise.BridgeStdLog(log)
	defer restore()

	ctx := c.Context
	if m != modeDaemon {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Duration("timeout"))
		defer cancel()
	}

	// One Consul probe, built from the runner's own client settings: the
	// stale guard never applies a held render while Consul is leaderless,
	// and the supervisor rebuilds the runner the moment Consul answers
	// again after an outage (a wiped agent would otherwise hold the old
	// watch indexes for a whole blocking-query wait).
	consulUp := cfg.ConsulProbe()

	// Proxies: one per template that names one, keyed "kind:dest".
	reloaders := map[string]supervise.Reloader{}
	var targets []pipeline.Target
	for _, t := range cfg.Templates {
		tg := pipeline.Target{Template: t.Source, Dest: t.Dest, Keep: cfg.Keep}
		if t.Proxy != config.ProxyNone {
			key := t.Proxy + ":" + t.Dest
			r, v, err := newProxy(cfg, t, log)
			if err != nil {
				return cli.Exit("renderer: "+err.Error(), exitUsage)
			}
			tg.Proxy, tg.Validator = key, v
			// The stale guard counts servers per upstream/backend block.
			// Caddy has no guard: its upstreams live in reverse_proxy
			// lines or JSON, shapes the shipped templates do not produce
			// and a line counter would misread; a template with
			// --validate-cmd (proxy none) has no known shape either.
			switch t.Proxy {
			case config.ProxyNginx:
				tg.Backends = pipeline.NginxUpstreams
			case config.ProxyHAProxy:
				tg.Backends = pipeline.HAProxyBackends
			}
			if m != modePlan {
				reloaders[key] = r
			}
		} else if cfg.ValidateCmd != "" {
			tg.Validator = proxy.Command{Line: cfg.ValidateCmd, Timeout: cfg.CommandTimeout}
		}
		targets = append(targets, tg)
	}
	popts := pipeline.Options{Log: log, Timeout: cfg.CommandTimeout,
		MaxRemoval: cfg.MaxRemoval, HoldDown: cfg.HoldDown, Leader: consulUp}
	if m == modePlan {
		popts.Plan = c.App.Writer
	}
	pipe := pipeline.New(ctx, popts, targets)
	fm := funcs.Map()

	newEngine := func() (supervise.Engine, error) {
		r, err := manager.NewRunner(cfg.ConsulTemplate(pipe.Render, fm), false)
		if err != nil {
			return nil, err
		}
		return supervise.NewEngine(r), nil
	}
	// Parse every template now, so a typo fails the start with exit 1
	// instead of a runner that rebuilds forever.
	if e, err := newEngine(); err != nil {
		return cli.Exit(fmt.Sprintf("renderer: templates: %v", err), exitUsage)
	} else {
		e.Stop()
	}

	sup := supervise.New(supervise.Options{
		ConsulUp:     consulUp,
		Log:          log,
		NewEngine:    newEngine,
		Pipeline:     pipe,
		Proxies:      reloaders,
		WaitMin:      cfg.WaitMin,
		WaitMax:      cfg.WaitMax,
		MinReloadGap: cfg.MinReloadGap,
		Once:         m != modeDaemon,
	})

	// The status server is the daemon's: once and plan are over before
	// anyone would scrape them. Bind now, so a taken port fails the start.
	var statusLn net.Listener
	if addr := c.String("status-addr"); addr != "" && m == modeDaemon {
		if statusLn, err = net.Listen("tcp", addr); err != nil {
			return cli.Exit(fmt.Sprintf("renderer: --status-addr %q: %v", addr, err), exitUsage)
		}
		log.Info("status server listening", "addr", statusLn.Addr().String())
	}

	g, gctx := errgroup.WithContext(ctx)
	if os.Getpid() == 1 {
		g.Go(func() error { reapLoop(gctx); return nil })
	}
	if statusLn != nil {
		h := status.Handler(statusSource{targets: targets, pipe: pipe, sup: sup})
		g.Go(func() error { return serveStatus(gctx, statusLn, h) })
	}
	g.Go(func() error {
		err := sup.Run(gctx)
		if err == nil && m == modeDaemon {
			// A clean daemon stop: end the reaper too.
			return context.Canceled
		}
		if err == nil {
			return errDone
		}
		return err
	})
	err = g.Wait()
	if errors.Is(err, errDone) || (errors.Is(err, context.Canceled) && c.Context.Err() != nil) {
		err = nil
	}
	if m == modePlan && err == nil {
		fmt.Fprintln(c.App.Writer, "plan: every rendered config is valid; nothing was changed")
	}
	return exitFor(err)
}

var errDone = errors.New("done")

// reapLoop collects orphaned zombies while the renderer is PID 1 in a
// container: nothing else would.
func reapLoop(ctx context.Context) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGCHLD)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			proxy.ReapOrphans()
		}
	}
}
