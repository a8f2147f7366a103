package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/template"

	"github.com/hashicorp/consul-template/manager"
	ctrenderer "github.com/hashicorp/consul-template/renderer"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/renderer/internal/config"
	"github.com/switchyard/switchyard/renderer/internal/funcs"
	"github.com/switchyard/switchyard/renderer/internal/logbridge"
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
		NginxConf:            c.String("nginx-conf"),
		HAProxyFiles:         c.StringSlice("haproxy-file"),
		CaddyConf:            c.String("caddy-conf"),
		ValidateCmd:          c.String("validate-cmd"),
		MinReloadGap:         c.Duration("min-reload-gap"),
		CommandTimeout:       c.Duration("command-timeout"),
		Keep:                 c.Int("keep"),
		MaxRemoval:           c.Float64("max-removal"),
		HoldDown:             c.Duration("hold-down"),
		MaxProxyDeaths:       c.Int("max-proxy-deaths"),
		RuntimeApply:         c.Bool("runtime-apply"),
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

// app is the renderer wired for one run: everything main builds before
// the loop starts.
type app struct {
	cfg       *config.Config
	log       *slog.Logger
	rec       *status.Recorder
	hist      *status.Histograms
	targets   []pipeline.Target
	reloaders map[string]supervise.Reloader
	sup       *supervise.Supervisor
	statusLn  net.Listener
	mirror    *mirrorRun // nil: --consul-mirror=false
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
	// Every line consul-template logs goes through the bridge, which
	// redacts the Consul token; so does every error /status shows.
	bridge := logbridge.New(log, logbridge.Options{
		Secrets:     []string{cfg.Consul.Token, os.Getenv("CONSUL_HTTP_TOKEN"), os.Getenv("CONSUL_TOKEN"), os.Getenv("VAULT_TOKEN")},
		SecretFiles: []string{cfg.Consul.TokenFile, os.Getenv("CONSUL_HTTP_TOKEN_FILE")},
		// The mirror holds the agent connections: consul-template's
		// count of its watches says nothing about Consul's load then.
		WatchesAreLocal: c.Bool("consul-mirror"),
	})
	defer bridge.Restore()
	for _, w := range cfg.Warnings {
		log.Warn("config: " + w)
	}
	ctx := c.Context
	if m != modeDaemon {
		// once and plan signal an existing proxy, if any; they never own one.
		cfg.ProxyMode = config.ModeExternal
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Duration("timeout"))
		defer cancel()
	}
	a, err := wire(ctx, c, cfg, m, log, bridge.Redactor())
	if err != nil {
		return exitFor(err)
	}
	err = a.serve(ctx, m)
	if m == modePlan && err == nil {
		fmt.Fprintln(c.App.Writer, "plan: every rendered config is valid; nothing was changed")
	}
	return exitFor(err)
}

// wire builds the app: templates parsed, proxies found, pipeline,
// supervisor, status listener bound (a taken port fails the start).
func wire(ctx context.Context, c *cli.Context, cfg *config.Config, m mode, log *slog.Logger, redact logbridge.Redactor) (*app, error) {
	fm := funcs.Map()
	if errs := cfg.CheckTemplates(fm); len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", errSetup, joinSorted(errs))
	}
	a := &app{cfg: cfg, log: log, rec: status.NewRecorder(redact), hist: status.NewHistograms(),
		reloaders: map[string]supervise.Reloader{}}
	wired := false
	defer func() {
		if !wired && a.mirror != nil {
			a.mirror.close() // a start that fails leaves no listener behind
		}
	}()
	if err := a.buildTargets(ctx, m); err != nil {
		return nil, err
	}
	if c.Bool("consul-mirror") {
		// Before the runner and the probe are built: both go through it.
		var err error
		if a.mirror, err = startMirror(cfg, log, a.hist); err != nil {
			return nil, fmt.Errorf("%w: --consul-mirror: %w", errSetup, err)
		}
	}
	a.sup = a.newSupervisor(ctx, c, m, fm)
	// The status server is the daemon's: once and plan are over before
	// anyone would scrape them.
	if addr := c.String("status-addr"); addr != "" && m == modeDaemon {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%w: --status-addr %q: %w", errSetup, addr, err)
		}
		a.statusLn = ln
		log.Info("status server listening", "addr", ln.Addr().String())
	}
	wired = true
	return a, nil
}

// newSupervisor builds the pipeline (or the plan) over the targets and
// the supervisor that drives consul-template, the proxies and the
// pipeline.
func (a *app) newSupervisor(ctx context.Context, c *cli.Context, m mode, fm template.FuncMap) *supervise.Supervisor {
	cfg, log := a.cfg, a.log
	var pipe supervise.Pipeline
	var render ctrenderer.Renderer
	if m == modePlan {
		p := pipeline.NewPlan(ctx, c.App.Writer, cfg.CommandTimeout, a.targets)
		pipe, render = p, p.Render
	} else {
		p := pipeline.New(ctx, pipeline.Options{Log: log, Timeout: cfg.CommandTimeout,
			MaxRemoval: cfg.MaxRemoval, HoldDown: cfg.HoldDown, Status: a.rec, Observer: a.hist}, a.targets)
		pipe, render = p, p.Render
	}
	newEngine := a.engines(render, fm, a.mirror != nil && c.Bool("consul-mirror-inline"))
	return supervise.New(supervise.Options{
		ConsulUp: cfg.ConsulProbe(), Log: log, NewEngine: newEngine, Pipeline: pipe,
		Proxies: a.reloaders, Status: a.rec, Observer: a.hist,
		WaitMin: cfg.WaitMin, WaitMax: cfg.WaitMax, MinReloadGap: cfg.MinReloadGap,
		Once: m != modeDaemon, MaxProxyDeaths: cfg.MaxProxyDeaths,
		RuntimeApply: cfg.RuntimeApply,
		Reread:       rereadOn(ctx, m), CheckTemplates: func() map[string]error { return cfg.CheckTemplates(fm) },
		Dests: cfg.Dests(),
	})
}

// engines builds a consul-template runner for each (re)start; with
// inline, each runner gets an inline session of the mirror, closed when
// the runner stops.
func (a *app) engines(render ctrenderer.Renderer, fm template.FuncMap, inline bool) func() (supervise.Engine, error) {
	return func() (supervise.Engine, error) {
		ct := a.cfg.ConsulTemplate(render, fm)
		var stop func()
		if inline {
			in, err := a.mirror.inline(ct, a.log)
			if err != nil {
				return nil, err
			}
			if in != nil {
				stop = in.Close
			}
		}
		r, err := manager.NewRunner(ct, false)
		if err != nil {
			if stop != nil {
				stop()
			}
			return nil, err
		}
		return supervise.NewEngine(r, stop), nil
	}
}

// buildTargets makes one pipeline target per template, and one proxy per
// main config the templates feed (keyed "kind:main config").
func (a *app) buildTargets(ctx context.Context, m mode) error {
	px := newProxies(a.cfg, a.log)
	for _, t := range a.cfg.Templates {
		tg := pipeline.Target{Template: t.Source, Dest: t.Dest, Keep: a.cfg.Keep,
			Owner: pipeline.NewOwner(t.UID, t.GID)}
		if t.Proxy != config.ProxyNone {
			key, r, v, err := px.forTemplate(ctx, t)
			if err != nil {
				return fmt.Errorf("%w: %w", errSetup, err)
			}
			tg.Proxy, tg.Validator, tg.Backends = key, v, backendsOf(t)
			if ro, ok := r.(runtimeOnlyChecker); ok && a.cfg.RuntimeApply && m != modePlan {
				tg.RuntimeOnly = ro.RuntimeOnly
			}
			if a.cfg.ValidateCmd == "" {
				tg.Set = r // a unit's members are validated together
			}
			if m != modePlan {
				a.reloaders[key] = r
			}
		} else if a.cfg.ValidateCmd != "" {
			tg.Validator = proxy.Command{Line: a.cfg.ValidateCmd, Timeout: a.cfg.CommandTimeout}
		}
		a.rec.AddTemplate(tg.Template, tg.Dest, tg.Proxy)
		a.targets = append(a.targets, tg)
	}
	return nil
}

// runtimeOnlyChecker is a proxy that tells a membership-only render, which it
// applies and checks at runtime, from one it must validate first
// (pipeline.Target.RuntimeOnly).
type runtimeOnlyChecker interface {
	RuntimeOnly(live, next []byte) bool
}

// backendsOf is how the stale guard counts servers in a proxy's config:
// upstreams per nginx upstream, servers per HAProxy backend, static
// upstreams per Caddyfile reverse_proxy. A Caddy JSON config is not
// counted (its pools are not lines).
func backendsOf(t config.Template) func([]byte) pipeline.Counts {
	switch t.Proxy {
	case config.ProxyNginx:
		return pipeline.NginxUpstreams
	case config.ProxyHAProxy:
		return pipeline.HAProxyBackends
	case config.ProxyCaddy:
		if !strings.HasSuffix(t.Dest, ".json") {
			return pipeline.CaddyUpstreams
		}
	}
	return nil
}

// serve runs the supervisor, the status server and, as PID 1, the reaper.
func (a *app) serve(ctx context.Context, m mode) error {
	g, gctx := errgroup.WithContext(ctx)
	if a.mirror != nil {
		defer a.mirror.close()
		g.Go(func() error { return a.mirror.m.Run(gctx) })
		g.Go(func() error { return a.mirror.m.Serve(gctx, a.mirror.ln) })
	}
	if os.Getpid() == 1 {
		g.Go(func() error { reapLoop(gctx); return nil })
	}
	if a.statusLn != nil {
		h := status.Handler(a.rec, a.hist)
		g.Go(func() error { return serveStatus(gctx, a.statusLn, h) })
	}
	g.Go(func() error {
		if err := a.sup.Run(gctx); err != nil {
			return err
		}
		return errDone // ends the reaper and the status server too
	})
	err := g.Wait()
	if errors.Is(err, errDone) || (m == modeDaemon && errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

var errDone = errors.New("done")

// rereadOn turns SIGHUP into a request to read the templates again, as
// consul-template does (daemon only).
func rereadOn(ctx context.Context, m mode) <-chan struct{} {
	if m != modeDaemon {
		return nil
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	out := make(chan struct{}, 1)
	go func() {
		defer signal.Stop(sig)
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out
}

// joinSorted joins errors by destination, in a stable order.
func joinSorted(errs map[string]error) error {
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	msgs := make([]string, 0, len(keys))
	for _, k := range keys {
		msgs = append(msgs, errs[k].Error())
	}
	return errors.New(strings.Join(msgs, "; "))
}

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
