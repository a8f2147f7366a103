package config

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// ProxyRef says which proxy a template feeds: several templates that
// name the same Key feed one proxy (one main config, one reload per
// batch). Main is the file that proxy loads first: the template's own
// destination for a whole config, or the main config a fragment is
// included by.
type ProxyRef struct {
	Key      string // "nginx:/etc/nginx/nginx.conf"
	Kind     string // nginx, haproxy, caddy
	Main     string
	Fragment bool     // Dest is not Main: validated inside Main's whole config
	Files    []string // haproxy: every -f in order
}

// CompiledNginxConf stands for nginx's compiled-in main config
// (nginx -V --conf-path) until main resolves it.
const CompiledNginxConf = "(nginx --conf-path)"

// eventsBlock finds a top-level `events {` in a template's source: only a
// main nginx config has one, a fragment for conf.d never does.
var eventsBlock = regexp.MustCompile(`(?m)^\s*events\s*\{`)

// ProxyOf returns the proxy template t feeds; nginxConf is nginx's
// compiled-in main config, used for fragments when --nginx-conf is not
// given.
func (c *Config) ProxyOf(t Template, nginxConf string) ProxyRef {
	r := ProxyRef{Kind: t.Proxy, Main: t.Dest}
	switch t.Proxy {
	case ProxyNginx:
		r.Main = c.nginxMain(t, nginxConf)
	case ProxyHAProxy:
		if c.inHAProxyFiles(t.Dest) {
			r.Main, r.Files = c.HAProxyFiles[0], c.HAProxyFiles
		} else {
			r.Files = []string{t.Dest}
		}
	case ProxyCaddy:
		if c.CaddyConf != "" {
			r.Main = c.CaddyConf
		}
	}
	r.Key, r.Fragment = t.Proxy+":"+r.Main, r.Main != t.Dest
	return r
}

func (c *Config) nginxMain(t Template, nginxConf string) string {
	switch {
	case c.NginxConf != "":
		return c.NginxConf
	case isNginxMainTemplate(t.Source):
		return t.Dest
	}
	return nginxConf
}

func isNginxMainTemplate(source string) bool {
	b, err := os.ReadFile(source)
	return err == nil && eventsBlock.Match(b)
}

// inHAProxyFiles reports whether dest is one of the --haproxy-file paths
// or lies in one of them that is a directory.
func (c *Config) inHAProxyFiles(dest string) bool {
	if slices.Contains(c.HAProxyFiles, dest) {
		return true
	}
	for _, f := range c.HAProxyFiles {
		if fi, err := os.Stat(f); err == nil && fi.IsDir() && filepath.Dir(dest) == filepath.Clean(f) {
			return strings.HasSuffix(dest, ".cfg")
		}
	}
	return false
}

// proxyKeys returns the distinct proxies the templates feed.
func (c *Config) proxyKeys() []string {
	var keys []string
	for _, t := range c.Templates {
		if t.Proxy == ProxyNone {
			continue
		}
		if k := c.ProxyOf(t, CompiledNginxConf).Key; !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys
}
