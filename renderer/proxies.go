package main

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/switchyard/switchyard/renderer/internal/config"
	"github.com/switchyard/switchyard/renderer/internal/pipeline"
	"github.com/switchyard/switchyard/renderer/internal/proxy"
	"github.com/switchyard/switchyard/renderer/internal/supervise"
)

// newProxy builds the reloader and the validator of template t. With
// --validate-cmd the operator's command replaces the proxy's own check.
func newProxy(cfg *config.Config, t config.Template, log *slog.Logger) (supervise.Reloader, pipeline.Validator, error) {
	supervised := cfg.ProxyMode == config.ModeSupervise
	var r interface {
		supervise.Reloader
		pipeline.Validator
	}
	switch t.Proxy {
	case config.ProxyNginx:
		bin, err := config.LookBin(cfg.NginxBin)
		if err != nil {
			return nil, nil, fmt.Errorf("--nginx-bin %q: %w", cfg.NginxBin, err)
		}
		prefix := cfg.NginxPrefix
		if prefix == "" {
			prefix = filepath.Dir(t.Dest)
		}
		r = &proxy.Nginx{Bin: bin, Prefix: prefix, Config: t.Dest, PidFile: cfg.NginxPidFile,
			Timeout: cfg.CommandTimeout, Supervise: supervised, Log: log}
	case config.ProxyHAProxy:
		bin, err := config.LookBin(cfg.HAProxyBin)
		if err != nil {
			return nil, nil, fmt.Errorf("--haproxy-bin %q: %w", cfg.HAProxyBin, err)
		}
		r = &proxy.HAProxy{Bin: bin, Config: t.Dest, Socket: cfg.HAProxySocket,
			Timeout: cfg.CommandTimeout, Supervise: supervised, Log: log}
	case config.ProxyCaddy:
		bin, err := config.LookBin(cfg.CaddyBin)
		if err != nil {
			return nil, nil, fmt.Errorf("--caddy-bin %q: %w", cfg.CaddyBin, err)
		}
		r = &proxy.Caddy{Bin: bin, Config: t.Dest, Admin: cfg.CaddyAdmin,
			Timeout: cfg.CommandTimeout, Supervise: supervised, Log: log}
	default:
		return nil, nil, fmt.Errorf("--template %s: unknown proxy %q", t.Source, t.Proxy)
	}
	var v pipeline.Validator = r
	if cfg.ValidateCmd != "" {
		v = proxy.Command{Line: cfg.ValidateCmd, Timeout: cfg.CommandTimeout}
	}
	return r, v, nil
}
