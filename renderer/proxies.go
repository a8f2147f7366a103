package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/switchyard/switchyard/renderer/internal/config"
	"github.com/switchyard/switchyard/renderer/internal/pipeline"
	"github.com/switchyard/switchyard/renderer/internal/proxy"
	"github.com/switchyard/switchyard/renderer/internal/supervise"
)

// reloader is what a proxy is to the supervisor and to the pipeline.
type reloader interface {
	supervise.Reloader
	// ValidateSet validates staged files (live path -> staged path) in
	// the whole configuration the proxy loads.
	ValidateSet(ctx context.Context, replace map[string]string) error
}

// proxies builds one reloader per proxy the templates feed (config.ProxyOf):
// a main config and the fragments it includes share one.
type proxies struct {
	cfg       *config.Config
	log       *slog.Logger
	nginxConf string // nginx's compiled-in main config, looked up once
	byKey     map[string]reloader
}

func newProxies(cfg *config.Config, log *slog.Logger) *proxies {
	return &proxies{cfg: cfg, log: log, byKey: map[string]reloader{}}
}

// forTemplate returns the proxy key of t, its reloader and the validator
// of its renders: the proxy's own check of the staged file in place of
// the live one, inside the whole configuration (a fragment in its main
// config), or --validate-cmd.
func (p *proxies) forTemplate(ctx context.Context, t config.Template) (string, reloader, pipeline.Validator, error) {
	ref, err := p.ref(ctx, t)
	if err != nil {
		return "", nil, nil, err
	}
	r, ok := p.byKey[ref.Key]
	if !ok {
		if r, err = p.build(t, ref); err != nil {
			return "", nil, nil, err
		}
		p.byKey[ref.Key] = r
	}
	var v pipeline.Validator = inContext{set: r, live: t.Dest}
	if p.cfg.ValidateCmd != "" {
		v = proxy.Command{Line: p.cfg.ValidateCmd, Timeout: p.cfg.CommandTimeout}
	}
	return ref.Key, r, v, nil
}

func (p *proxies) ref(ctx context.Context, t config.Template) (config.ProxyRef, error) {
	ref := p.cfg.ProxyOf(t, config.CompiledNginxConf)
	if ref.Main != config.CompiledNginxConf {
		return ref, nil
	}
	if p.nginxConf == "" {
		bin, err := config.LookBin(p.cfg.NginxBin)
		if err != nil {
			return ref, fmt.Errorf("--nginx-bin %q: %w", p.cfg.NginxBin, err)
		}
		if p.nginxConf, err = proxy.NginxConfPath(ctx, bin); err != nil {
			return ref, fmt.Errorf("--template %s: a fragment, and nginx's main config is unknown (give --nginx-conf): %w", t.Source, err)
		}
	}
	return p.cfg.ProxyOf(t, p.nginxConf), nil
}

// build makes the reloader of one proxy.
func (p *proxies) build(t config.Template, ref config.ProxyRef) (reloader, error) {
	cfg, supervised := p.cfg, p.cfg.ProxyMode == config.ModeSupervise
	switch t.Proxy {
	case config.ProxyNginx:
		bin, err := config.LookBin(cfg.NginxBin)
		if err != nil {
			return nil, fmt.Errorf("--nginx-bin %q: %w", cfg.NginxBin, err)
		}
		n := &proxy.Nginx{Bin: bin, Prefix: cfg.NginxPrefix, Config: ref.Main, MainConfig: ref.Main,
			PidFile: cfg.NginxPidFile, Timeout: cfg.CommandTimeout, Supervise: supervised, Log: p.log}
		if ref.Fragment && cfg.NginxPrefix == "" {
			n.CompiledPrefix = true // nginx loads a main config of its own
		} else if n.Prefix == "" {
			n.Prefix = filepath.Dir(ref.Main)
		}
		return n, nil
	case config.ProxyHAProxy:
		bin, err := config.LookBin(cfg.HAProxyBin)
		if err != nil {
			return nil, fmt.Errorf("--haproxy-bin %q: %w", cfg.HAProxyBin, err)
		}
		return &proxy.HAProxy{Bin: bin, Config: ref.Main, Files: ref.Files, Socket: cfg.HAProxySocket,
			Timeout: cfg.CommandTimeout, Supervise: supervised, Log: p.log}, nil
	case config.ProxyCaddy:
		bin, err := config.LookBin(cfg.CaddyBin)
		if err != nil {
			return nil, fmt.Errorf("--caddy-bin %q: %w", cfg.CaddyBin, err)
		}
		return &proxy.Caddy{Bin: bin, Config: ref.Main, MainConfig: ref.Main, Admin: cfg.CaddyAdmin,
			Timeout: cfg.CommandTimeout, Supervise: supervised, Log: p.log}, nil
	}
	return nil, fmt.Errorf("--template %s: unknown proxy %q", t.Source, t.Proxy)
}

// inContext validates a staged render of live inside the whole
// configuration its proxy loads.
type inContext struct {
	set  reloader
	live string
}

func (v inContext) Validate(ctx context.Context, staged string) error {
	return v.set.ValidateSet(ctx, map[string]string{v.live: staged})
}
