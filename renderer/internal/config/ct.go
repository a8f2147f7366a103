package config

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	ctconfig "github.com/hashicorp/consul-template/config"
	dep "github.com/hashicorp/consul-template/dependency"
	"github.com/hashicorp/consul-template/renderer"
	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/renderer/internal/mirror"
)

// DeniedFunctions are consul-template functions an operator template may not
// call unless --allow-unsafe-functions: plugin runs any binary and
// writeToFile writes anywhere, both with the renderer's privileges.
var DeniedFunctions = []string{"plugin", "writeToFile"}

// DefaultRetryMaxBackoff caps the wait between Consul retries. Retries never
// stop: a daemon outlives any Consul outage.
const DefaultRetryMaxBackoff = 10 * time.Second

// LoadHCL reads a consul-template config file. Its template stanzas are
// appended to c.Templates (proxy = def; user/group are kept, resolved by
// Validate); wait{} becomes our reload
// debounce unless --wait was given; command/exec stanzas are dropped with a
// warning, because they would run after the live file was written and a
// failure would stop the runner.
func (c *Config) LoadHCL(path, def string, waitSet bool) error {
	ct, err := ctconfig.FromFile(path)
	if err != nil {
		return fmt.Errorf("--config %s: %w", path, err)
	}
	if ct.Templates != nil {
		for i, tc := range *ct.Templates {
			if ctconfig.StringVal(tc.Contents) != "" {
				return fmt.Errorf("--config %s: template #%d: inline contents are not supported, use source", path, i+1)
			}
			src, dst := ctconfig.StringVal(tc.Source), ctconfig.StringVal(tc.Destination)
			if src == "" || dst == "" {
				return fmt.Errorf("--config %s: template #%d: source and destination are required", path, i+1)
			}
			t := Template{
				Source:        resolve(path, src),
				Dest:          resolve(path, dst),
				Proxy:         def,
				LeftDelim:     ctconfig.StringVal(tc.LeftDelim),
				RightDelim:    ctconfig.StringVal(tc.RightDelim),
				Perms:         ctconfig.FileModeVal(tc.Perms),
				ErrMissingKey: ctconfig.BoolVal(tc.ErrMissingKey),
				User:          idVal(tc.User, tc.Uid),
				Group:         idVal(tc.Group, tc.Gid),
				UID:           -1,
				GID:           -1,
			}
			if !tc.Command.Empty() || (tc.Exec != nil && !tc.Exec.Command.Empty()) {
				c.Warnings = append(c.Warnings, fmt.Sprintf(
					"template %s: command is ignored; the renderer validates and reloads %s itself", src, def))
			}
			if tc.Wait != nil && ctconfig.BoolVal(tc.Wait.Enabled) {
				c.Warnings = append(c.Warnings, fmt.Sprintf(
					"template %s: per-template wait is ignored; the global wait debounces reloads", src))
			}
			c.Templates = append(c.Templates, t)
		}
	}
	if ct.Exec != nil && !ct.Exec.Command.Empty() {
		c.Warnings = append(c.Warnings, "exec stanza is ignored; use --proxy-mode supervise to run the proxy")
	}
	if ct.Wait != nil && !waitSet && (ct.Wait.Min != nil || ct.Wait.Max != nil) {
		c.WaitMin = ctconfig.TimeDurationVal(ct.Wait.Min)
		c.WaitMax = ctconfig.TimeDurationVal(ct.Wait.Max)
		if c.WaitMax < c.WaitMin {
			c.WaitMax = 4 * c.WaitMin
		}
	}
	ct.Templates = nil
	ct.Exec = nil
	ct.Wait = nil
	c.hcl = ct
	return nil
}

// idVal is a template stanza's user (group), or its legacy uid (gid) as
// consul-template's Finalize reads them: the name wins. Validate resolves
// it.
func idVal(name *string, id *int) string {
	if name == nil && id != nil {
		return strconv.Itoa(*id)
	}
	return ctconfig.StringVal(name)
}

// applyConsul sets how consul-template reaches Consul: our flags over the
// HCL consul{} block over consul-template's env defaults, and retries that
// never give up.
func (c *Config) applyConsul(ct *ctconfig.Config) {
	cc := ct.Consul
	setStr := func(dst **string, v string) {
		if v != "" {
			*dst = ctconfig.String(v)
		}
	}
	setStr(&cc.Address, c.Consul.Addr)
	setStr(&cc.Token, c.Consul.Token)
	setStr(&cc.TokenFile, c.Consul.TokenFile)
	if c.Consul.SSL || c.Consul.CACert != "" || c.Consul.ClientCert != "" {
		if cc.SSL == nil {
			cc.SSL = ctconfig.DefaultSSLConfig()
		}
		cc.SSL.Enabled = ctconfig.Bool(true)
		cc.SSL.Verify = ctconfig.Bool(c.Consul.SSLVerify)
		setStr(&cc.SSL.CaCert, c.Consul.CACert)
		setStr(&cc.SSL.Cert, c.Consul.ClientCert)
		setStr(&cc.SSL.Key, c.Consul.ClientKey)
		setStr(&cc.SSL.ServerName, c.Consul.ServerName)
	}
	// Unlimited attempts with a capped backoff: consul-template's default
	// gives up after 12 attempts (~5 min) and the runner dies.
	maxBackoff := c.Consul.RetryMaxBackoff
	if maxBackoff <= 0 {
		maxBackoff = DefaultRetryMaxBackoff
	}
	cc.Retry = &ctconfig.RetryConfig{
		Enabled:    ctconfig.Bool(true),
		Attempts:   ctconfig.Int(0),
		Backoff:    ctconfig.TimeDuration(250 * time.Millisecond),
		MaxBackoff: ctconfig.TimeDuration(maxBackoff),
	}
}

// viaMirror points consul-template at the read mirror when there is one:
// plain HTTP on loopback, with the mirror's per-run secret as the token
// (the mirror sends the real one upstream). The probe goes there too, so
// "the probe answers" keeps meaning "the runner's watches can answer".
func (c *Config) viaMirror(ct *ctconfig.Config) {
	if c.Consul.MirrorAddr == "" {
		return
	}
	cc := ct.Consul
	cc.Address = ctconfig.String(c.Consul.MirrorAddr)
	cc.Token = ctconfig.String(c.Consul.MirrorSecret)
	cc.TokenFile = ctconfig.String("")
	cc.SSL = ctconfig.DefaultSSLConfig()
	cc.SSL.Enabled = ctconfig.Bool(false)
}

// MirrorUpstream is how the read mirror reaches Consul: the address, TLS
// and token consul-template would use without it (flags over the HCL
// consul{} block over the environment).
func (c *Config) MirrorUpstream() (mirror.Upstream, error) {
	ct := ctconfig.DefaultConfig()
	if c.hcl != nil {
		ct = ct.Merge(c.hcl)
	}
	c.applyConsul(ct)
	ct.Finalize()
	cc := ct.Consul
	up := mirror.Upstream{Transport: &http.Transport{}}
	addr := ctconfig.StringVal(cc.Address)
	if addr == "" {
		addr = "127.0.0.1:8500"
	}
	scheme := "http"
	if ctconfig.BoolVal(cc.SSL.Enabled) {
		scheme = "https"
	}
	if s, rest, ok := strings.Cut(addr, "://"); ok {
		switch s {
		case "http", "https":
			scheme, addr = s, rest
		case "unix":
			up.Network, up.Addr, addr = "unix", rest, "consul"
		default:
			return up, fmt.Errorf("consul address %q: unknown scheme %s", addr, s)
		}
	}
	up.BaseURL = scheme + "://" + strings.TrimSuffix(addr, "/")
	if scheme == "https" {
		tlsCfg, err := api.SetupTLSConfig(&api.TLSConfig{
			Address: ctconfig.StringVal(cc.SSL.ServerName), CAFile: ctconfig.StringVal(cc.SSL.CaCert),
			CAPath: ctconfig.StringVal(cc.SSL.CaPath), CertFile: ctconfig.StringVal(cc.SSL.Cert),
			KeyFile: ctconfig.StringVal(cc.SSL.Key), InsecureSkipVerify: !ctconfig.BoolVal(cc.SSL.Verify),
		})
		if err != nil {
			return up, fmt.Errorf("consul TLS: %w", err)
		}
		up.Transport.TLSClientConfig = tlsCfg
	}
	up.Token = ctconfig.StringVal(cc.Token)
	if f := ctconfig.StringVal(cc.TokenFile); up.Token == "" && f != "" {
		// Read now for a clear error at start, and again by the mirror
		// for every request, so a rotated token needs no restart.
		if _, err := os.ReadFile(f); err != nil {
			return up, fmt.Errorf("consul token file: %w", err)
		}
		up.TokenFile = f
	}
	return up, nil
}

// ConsulProbe returns a cheap check that Consul answers and has a leader
// (GET /v1/status/leader), made with exactly the client settings the
// consul-template runner uses (flags, HCL consul{} block, env, TLS), so
// "the probe answers" means "the runner's watches can answer too". The
// supervisor polls it after Consul errors to rebuild the runner as soon as
// Consul is back.
func (c *Config) ConsulProbe() func(context.Context) error {
	ct := ctconfig.DefaultConfig()
	if c.hcl != nil {
		ct = ct.Merge(c.hcl)
	}
	c.applyConsul(ct)
	c.viaMirror(ct)
	ct.Finalize()
	client, err := consulClient(ct.Consul)
	return func(ctx context.Context) error {
		if err != nil {
			return err
		}
		leader, err := client.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("consul status/leader: %w", err)
		}
		if leader == "" {
			return errors.New("consul has no leader")
		}
		return nil
	}
}

// consulClient builds the Consul client the way consul-template's
// manager.NewClientSet does (same fields), without its Vault and Nomad
// clients, which a probe has no use for.
func consulClient(cc *ctconfig.ConsulConfig) (*api.Client, error) {
	cs := dep.NewClientSet()
	if err := cs.CreateConsulClient(&dep.CreateConsulClientInput{
		Address:                      ctconfig.StringVal(cc.Address),
		Namespace:                    ctconfig.StringVal(cc.Namespace),
		Token:                        ctconfig.StringVal(cc.Token),
		TokenFile:                    ctconfig.StringVal(cc.TokenFile),
		AuthEnabled:                  ctconfig.BoolVal(cc.Auth.Enabled),
		AuthUsername:                 ctconfig.StringVal(cc.Auth.Username),
		AuthPassword:                 ctconfig.StringVal(cc.Auth.Password),
		SSLEnabled:                   ctconfig.BoolVal(cc.SSL.Enabled),
		SSLVerify:                    ctconfig.BoolVal(cc.SSL.Verify),
		SSLCert:                      ctconfig.StringVal(cc.SSL.Cert),
		SSLKey:                       ctconfig.StringVal(cc.SSL.Key),
		SSLCACert:                    ctconfig.StringVal(cc.SSL.CaCert),
		SSLCAPath:                    ctconfig.StringVal(cc.SSL.CaPath),
		ServerName:                   ctconfig.StringVal(cc.SSL.ServerName),
		TransportDialKeepAlive:       ctconfig.TimeDurationVal(cc.Transport.DialKeepAlive),
		TransportDialTimeout:         ctconfig.TimeDurationVal(cc.Transport.DialTimeout),
		TransportDisableKeepAlives:   ctconfig.BoolVal(cc.Transport.DisableKeepAlives),
		TransportIdleConnTimeout:     ctconfig.TimeDurationVal(cc.Transport.IdleConnTimeout),
		TransportMaxIdleConns:        ctconfig.IntVal(cc.Transport.MaxIdleConns),
		TransportMaxIdleConnsPerHost: ctconfig.IntVal(cc.Transport.MaxIdleConnsPerHost),
		TransportMaxConnsPerHost:     ctconfig.IntVal(cc.Transport.MaxConnsPerHost),
		TransportTLSHandshakeTimeout: ctconfig.TimeDurationVal(cc.Transport.TLSHandshakeTimeout),
	}); err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	return cs.Consul(), nil
}

// resolve makes a relative path in the HCL file relative to the file's dir,
// so the config works from any working directory.
func resolve(file, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(file), p)
}

// ConsulTemplate builds the library config: our templates, our renderer,
// and daemon defaults instead of consul-template's one-shot-CLI ones.
// funcs are added to every template's function map.
func (c *Config) ConsulTemplate(render renderer.Renderer, funcs template.FuncMap) *ctconfig.Config {
	ct := ctconfig.DefaultConfig()
	if c.hcl != nil {
		ct = ct.Merge(c.hcl)
	}
	// block_query_wait stays at consul-template's 60 s (or the operator's
	// HCL value). A lower default would bound how long a watch carrying a
	// pre-restart index stays blind, but every idle watch would re-ask
	// Consul that much more often (one request per service per wait, for
	// the life of the daemon). The case that needs it, Consul back with
	// its data wiped, always broke the watches' connections first; the
	// supervisor then rebuilds the runner as soon as ConsulProbe answers,
	// which restarts every watch at index 0 within seconds.

	c.applyConsul(ct)
	c.viaMirror(ct)

	// A template or validation error must not kill the runner.
	ct.TemplateErrFatal = ctconfig.Bool(false)
	// consul-template's wait only starts after every template rendered
	// once; we debounce reloads after validation instead.
	ct.Wait = &ctconfig.WaitConfig{Enabled: ctconfig.Bool(false)}
	ct.Exec = ctconfig.DefaultExecConfig()
	ct.RendererFunc = render

	deny := DeniedFunctions
	if c.AllowUnsafeFunctions {
		deny = nil
	}
	tcs := make(ctconfig.TemplateConfigs, 0, len(c.Templates))
	for _, t := range c.Templates {
		tc := &ctconfig.TemplateConfig{
			Source:           ctconfig.String(t.Source),
			Destination:      ctconfig.String(t.Dest),
			ErrFatal:         ctconfig.Bool(false),
			ErrMissingKey:    ctconfig.Bool(t.ErrMissingKey),
			CreateDestDirs:   ctconfig.Bool(true),
			SandboxPath:      ctconfig.String(filepath.Dir(t.Source)),
			FunctionDenylist: append([]string(nil), deny...),
			ExtFuncMap:       funcs,
		}
		if t.LeftDelim != "" {
			tc.LeftDelim = ctconfig.String(t.LeftDelim)
		}
		if t.RightDelim != "" {
			tc.RightDelim = ctconfig.String(t.RightDelim)
		}
		if t.Perms != 0 {
			tc.Perms = ctconfig.FileMode(t.Perms)
		}
		tcs = append(tcs, tc)
	}
	ct.Templates = &tcs
	ct.Finalize()
	return ct
}
