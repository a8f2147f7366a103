// Package config turns the renderer's flags, environment and optional
// consul-template HCL file into one typed Config, validates it, and builds
// the consul-template library config from it. It is the only package that
// knows consul-template's config: the rest of the renderer sees Config.
package config

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	ctconfig "github.com/hashicorp/consul-template/config"
)

// Proxy kinds.
const (
	ProxyNginx   = "nginx"
	ProxyHAProxy = "haproxy"
	ProxyCaddy   = "caddy"
	ProxyNone    = "none"
)

// Proxy modes.
const (
	ModeExternal  = "external"
	ModeSupervise = "supervise"
)

// Template is one --template SRC:DEST[:PROXY].
type Template struct {
	Source string
	Dest   string
	Proxy  string // nginx, haproxy, caddy or none

	// Set only from an HCL template stanza.
	LeftDelim, RightDelim string
	Perms                 os.FileMode
	ErrMissingKey         bool
	// User and Group own the written file: a name or a numeric id, as in
	// consul-template's user/group (or legacy uid/gid). Empty keeps the
	// live file's owner / group.
	User, Group string

	// UID and GID are User and Group resolved by Validate, so a typo fails
	// at start-up and not at the first write; -1 keeps the live file's.
	UID, GID int
}

// Config is everything the renderer needs.
type Config struct {
	Consul Consul

	Templates []Template
	Proxy     string // default proxy for templates without one
	ProxyMode string

	NginxBin, NginxPrefix, NginxPidFile string
	HAProxyBin, HAProxySocket           string
	CaddyBin, CaddyAdmin                string

	// The main config of the proxy that fragments feed (see ProxyOf):
	// --nginx-conf, every --haproxy-file in order, --caddy-conf.
	NginxConf    string
	HAProxyFiles []string
	CaddyConf    string
	ValidateCmd  string // replaces the proxy's own check; {{path}} = staged file

	WaitMin, WaitMax time.Duration // reload debounce
	MinReloadGap     time.Duration
	CommandTimeout   time.Duration
	Keep             int // good generations kept per template

	MaxRemoval float64 // stale guard: fraction of backends a render may drop at once
	HoldDown   time.Duration

	// RuntimeApply: membership-only changes go through the proxy's runtime
	// interface instead of a reload (--runtime-apply).
	RuntimeApply bool
	// MaxProxyDeaths of a supervised proxy within a minute end the
	// renderer (exit 4); 0 = policy.DefaultMaxDeaths.
	MaxProxyDeaths int

	AllowUnsafeFunctions bool

	// Warnings lists HCL settings we accepted but do not honour (command,
	// exec): main logs them at start-up.
	Warnings []string

	// hcl is the operator's consul-template config file, if any: consul{},
	// vault{}, deduplicate{}, max_stale and the like pass through from it.
	hcl *ctconfig.Config
}

// Consul is how we reach Consul. Empty fields fall back to consul-template's
// own environment handling (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, ...).
type Consul struct {
	Addr                              string
	Token                             string
	TokenFile                         string
	CACert                            string
	SSL                               bool
	SSLVerify                         bool
	ClientCert, ClientKey, ServerName string
	// RetryMaxBackoff caps the backoff between Consul retries; retries
	// never stop.
	RetryMaxBackoff time.Duration
	// MirrorAddr, when set (http://127.0.0.1:PORT), is where
	// consul-template and the probe reach Consul: the renderer's read
	// mirror (--consul-mirror), which alone talks to the agent.
	// MirrorSecret is the token they send it instead of Consul's.
	MirrorAddr, MirrorSecret string
}

var proxies = []string{ProxyNginx, ProxyHAProxy, ProxyCaddy, ProxyNone}

// ParseTemplate parses SRC:DEST[:PROXY]; PROXY defaults to def.
func ParseTemplate(spec, def string) (Template, error) {
	parts := strings.Split(spec, ":")
	var t Template
	switch len(parts) {
	case 2:
		t = Template{Source: parts[0], Dest: parts[1], Proxy: def, UID: -1, GID: -1}
	case 3:
		t = Template{Source: parts[0], Dest: parts[1], Proxy: parts[2], UID: -1, GID: -1}
	default:
		return t, fmt.Errorf("--template %q: want SRC:DEST[:PROXY]", spec)
	}
	if t.Source == "" || t.Dest == "" {
		return t, fmt.Errorf("--template %q: SRC and DEST must not be empty", spec)
	}
	if !slices.Contains(proxies, t.Proxy) {
		return t, fmt.Errorf("--template %q: proxy %q is not one of %s", spec, t.Proxy, strings.Join(proxies, ", "))
	}
	return t, nil
}

// Validate checks the config and resolves paths and owners. It fails with
// a message naming the flag and the value at fault, before anything
// starts.
func (c *Config) Validate() error {
	errs := c.validateFlags()
	errs = append(errs, c.validateTemplates()...)
	errs = append(errs, c.validateProxies()...)
	return errors.Join(errs...)
}

// validateFlags checks the plain values.
func (c *Config) validateFlags() []error {
	var errs []error
	if !slices.Contains(proxies, c.Proxy) {
		errs = append(errs, fmt.Errorf("--proxy %q: want one of %s", c.Proxy, strings.Join(proxies, ", ")))
	}
	if c.ProxyMode != ModeExternal && c.ProxyMode != ModeSupervise {
		errs = append(errs, fmt.Errorf("--proxy-mode %q: want external or supervise", c.ProxyMode))
	}
	if c.WaitMin < 0 || c.WaitMax < c.WaitMin {
		errs = append(errs, fmt.Errorf("--wait %s:%s: want 0 <= MIN <= MAX", c.WaitMin, c.WaitMax))
	}
	if c.MaxRemoval < 0 || c.MaxRemoval > 1 {
		errs = append(errs, fmt.Errorf("--max-removal %v: want a fraction between 0 and 1", c.MaxRemoval))
	}
	if c.MaxProxyDeaths < 0 {
		errs = append(errs, fmt.Errorf("--max-proxy-deaths %d: want 1 or more (0 = the default)", c.MaxProxyDeaths))
	}
	// One generation is only the live file: a rollback would have
	// nothing to go back to, silently.
	if c.Keep < 2 {
		errs = append(errs, fmt.Errorf("--keep %d: want at least 2 (the live file and one to roll back to)", c.Keep))
	}
	if c.HoldDown < 0 {
		errs = append(errs, fmt.Errorf("--hold-down %s: want 0 or more", c.HoldDown))
	}
	// Zero would mean no deadline: a hung validate or reload would stall
	// every render.
	if c.CommandTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--command-timeout %s: want more than 0", c.CommandTimeout))
	}
	return errs
}

// validateTemplates makes template paths absolute, checks sources exist
// and destinations are unique, and resolves owners.
func (c *Config) validateTemplates() []error {
	var errs []error
	if len(c.Templates) == 0 {
		errs = append(errs, errors.New("--template: at least one SRC:DEST[:PROXY] is required"))
	}
	dests := map[string]bool{}
	for i := range c.Templates {
		t := &c.Templates[i]
		if src, err := filepath.Abs(t.Source); err == nil {
			t.Source = src
		}
		if _, err := os.Stat(t.Source); err != nil {
			errs = append(errs, fmt.Errorf("--template %s: source: %w", t.Source, err))
		}
		if dst, err := filepath.Abs(t.Dest); err == nil {
			t.Dest = dst
		}
		if dests[t.Dest] {
			errs = append(errs, fmt.Errorf("--template %s:%s: destination used twice", t.Source, t.Dest))
		}
		dests[t.Dest] = true
		errs = append(errs, t.resolveOwner()...)
	}
	return errs
}

// absMainConfigs makes the main-config flags absolute, as destinations are.
func (c *Config) absMainConfigs() {
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil && p != "" {
			return a
		}
		return p
	}
	c.NginxConf, c.CaddyConf = abs(c.NginxConf), abs(c.CaddyConf)
	for i, f := range c.HAProxyFiles {
		c.HAProxyFiles[i] = abs(f)
	}
}

// validateProxies checks what the proxies of the templates need.
func (c *Config) validateProxies() []error {
	var errs []error
	used := map[string]bool{}
	for _, t := range c.Templates {
		used[t.Proxy] = true
	}
	c.absMainConfigs()
	if keys := c.proxyKeys(); c.ProxyMode == ModeSupervise && len(keys) > 1 {
		errs = append(errs, fmt.Errorf("--proxy-mode supervise: the templates feed %d proxies (%s); supervise runs one: its main config and the fragments it includes", len(keys), strings.Join(keys, ", ")))
	}
	if c.ValidateCmd != "" {
		return errs
	}
	for _, b := range []struct{ proxy, flag, bin string }{
		{ProxyNginx, "--nginx-bin", c.NginxBin},
		{ProxyHAProxy, "--haproxy-bin", c.HAProxyBin},
		{ProxyCaddy, "--caddy-bin", c.CaddyBin},
	} {
		if used[b.proxy] {
			if _, err := LookBin(b.bin); err != nil {
				errs = append(errs, fmt.Errorf("%s %q: %w", b.flag, b.bin, err))
			}
		}
	}
	return errs
}

// resolveOwner sets UID and GID from User and Group.
func (t *Template) resolveOwner() []error {
	var errs []error
	var err error
	if t.UID, err = lookupID(t.User, func(name string) (string, error) {
		u, err := user.Lookup(name)
		if err != nil {
			return "", err
		}
		return u.Uid, nil
	}); err != nil {
		errs = append(errs, fmt.Errorf("template %s -> %s: user %q: %w", t.Source, t.Dest, t.User, err))
	}
	if t.GID, err = lookupID(t.Group, func(name string) (string, error) {
		g, err := user.LookupGroup(name)
		if err != nil {
			return "", err
		}
		return g.Gid, nil
	}); err != nil {
		errs = append(errs, fmt.Errorf("template %s -> %s: group %q: %w", t.Source, t.Dest, t.Group, err))
	}
	return errs
}

// maxID is the largest uid/gid; (uid_t)-1 itself means "no change".
const maxID = 1<<32 - 2

// lookupID is -1 for "", the number for a numeric id (taken as is, like
// chown(1): an id needs no name on this host), else the id lookup finds
// for the name.
func lookupID(v string, lookup func(string) (string, error)) (int, error) {
	if v == "" {
		return -1, nil
	}
	s := v
	if _, err := strconv.ParseUint(v, 10, 64); err != nil {
		id, err := lookup(v)
		if err != nil {
			return -1, err
		}
		s = id
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > maxID {
		return -1, fmt.Errorf("id %s: want 0 to %d", s, uint64(maxID))
	}
	return int(n), nil
}

// LookBin finds a proxy binary on PATH, then in the sbin dirs Debian uses
// and a non-root PATH lacks.
func LookBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if !strings.Contains(name, "/") {
		for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
			p := filepath.Join(dir, name)
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// ParseWait parses MIN:MAX or a single duration (MAX = 4*MIN, as
// consul-template does).
func ParseWait(s string) (time.Duration, time.Duration, error) {
	if s == "" {
		return 0, 0, nil
	}
	lo, hi, two := strings.Cut(s, ":")
	min, err := time.ParseDuration(lo)
	if err != nil {
		return 0, 0, fmt.Errorf("--wait %q: %w", s, err)
	}
	if !two {
		return min, 4 * min, nil
	}
	max, err := time.ParseDuration(hi)
	if err != nil {
		return 0, 0, fmt.Errorf("--wait %q: %w", s, err)
	}
	if max < min {
		return 0, 0, fmt.Errorf("--wait %q: MAX is below MIN", s)
	}
	return min, max, nil
}
