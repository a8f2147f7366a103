package main

import (
	"time"

	"github.com/urfave/cli/v2"
)

// flags is shared by the daemon and the once/plan subcommands, so every
// flag works after the subcommand name too. Every flag has an env var.
func flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "consul-addr", EnvVars: []string{"CONSUL_HTTP_ADDR"}, Usage: "Consul HTTP address, host:port (default 127.0.0.1:8500)"},
		&cli.StringFlag{Name: "consul-token", EnvVars: []string{"CONSUL_HTTP_TOKEN"}, Usage: "Consul ACL token"},
		&cli.StringFlag{Name: "consul-token-file", EnvVars: []string{"CONSUL_HTTP_TOKEN_FILE"}, Usage: "file holding the Consul ACL token"},
		&cli.BoolFlag{Name: "consul-ssl", EnvVars: []string{"CONSUL_HTTP_SSL"}, Usage: "talk HTTPS to Consul"},
		&cli.BoolFlag{Name: "consul-ssl-verify", EnvVars: []string{"CONSUL_HTTP_SSL_VERIFY"}, Value: true, Usage: "verify Consul's TLS certificate"},
		&cli.StringFlag{Name: "consul-cacert", EnvVars: []string{"CONSUL_CACERT"}, Usage: "CA certificate for Consul TLS"},
		&cli.StringFlag{Name: "consul-client-cert", EnvVars: []string{"CONSUL_CLIENT_CERT"}, Usage: "client certificate for Consul TLS"},
		&cli.StringFlag{Name: "consul-client-key", EnvVars: []string{"CONSUL_CLIENT_KEY"}, Usage: "client key for Consul TLS"},
		&cli.StringFlag{Name: "consul-tls-server-name", EnvVars: []string{"CONSUL_TLS_SERVER_NAME"}, Usage: "server name for Consul TLS"},
		&cli.BoolFlag{Name: "consul-mirror", EnvVars: []string{"RENDERER_CONSUL_MIRROR"}, Value: true, Usage: "serve consul-template from an in-process read mirror that holds at most 4 connections to the agent, whatever the number of watched services (see Large catalogs); false: consul-template talks to the agent itself, one connection per watched dependency"},
		&cli.BoolFlag{Name: "consul-mirror-inline", EnvVars: []string{"RENDERER_CONSUL_MIRROR_INLINE"}, Value: true, Usage: "with --consul-mirror: the service template function reads the mirror in process instead of holding a blocking query per service, so a template over 10,000 services costs no connection, goroutine or descriptor per service (see Large catalogs); the KV path .switchyard-inline/ is the mirror's own"},
		&cli.DurationFlag{Name: "consul-retry-max-backoff", EnvVars: []string{"RENDERER_CONSUL_RETRY_MAX_BACKOFF"}, Value: 10 * time.Second, Usage: "cap of the wait between Consul retries (retries never stop)"},

		&cli.StringSliceFlag{Name: "template", Aliases: []string{"t"}, EnvVars: []string{"RENDERER_TEMPLATES"}, Usage: "SRC:DEST[:PROXY], repeatable (env: comma-separated); PROXY defaults to --proxy"},
		&cli.StringFlag{Name: "config", EnvVars: []string{"RENDERER_CONFIG"}, Usage: "consul-template HCL config file (template, consul, wait, deduplicate stanzas)"},
		&cli.StringFlag{Name: "proxy", EnvVars: []string{"RENDERER_PROXY"}, Value: "nginx", Usage: "nginx | haproxy | caddy | none: proxy of templates that name none"},
		&cli.StringFlag{Name: "proxy-mode", EnvVars: []string{"RENDERER_PROXY_MODE"}, Value: "external", Usage: "external (signal a running proxy) | supervise (run it as our child)"},
		&cli.StringFlag{Name: "nginx-bin", EnvVars: []string{"RENDERER_NGINX_BIN"}, Value: "nginx", Usage: "nginx binary"},
		&cli.StringFlag{Name: "nginx-prefix", EnvVars: []string{"RENDERER_NGINX_PREFIX"}, Usage: "nginx prefix dir, -p (default: the destination's dir)"},
		&cli.StringFlag{Name: "nginx-pid-file", EnvVars: []string{"RENDERER_NGINX_PID_FILE"}, Usage: "pid file of an external nginx (default: the config's pid directive)"},
		&cli.StringFlag{Name: "nginx-conf", EnvVars: []string{"RENDERER_NGINX_CONF"}, Usage: "main config of the nginx whose fragments the templates render (default: a template with a top-level events block is its own main config; any other is a fragment of nginx's compiled-in --conf-path, validated inside it)"},
		&cli.StringSliceFlag{Name: "haproxy-file", EnvVars: []string{"RENDERER_HAPROXY_FILES"}, Usage: "every -f of the HAProxy configuration, in order, repeatable (a directory too); templates rendering one of them are validated with all of them"},
		&cli.StringFlag{Name: "caddy-conf", EnvVars: []string{"RENDERER_CADDY_CONF"}, Usage: "main Caddyfile whose imports the templates render; they are validated inside it"},
		&cli.StringFlag{Name: "haproxy-bin", EnvVars: []string{"RENDERER_HAPROXY_BIN"}, Value: "haproxy", Usage: "haproxy binary"},
		&cli.StringFlag{Name: "haproxy-socket", EnvVars: []string{"RENDERER_HAPROXY_SOCKET"}, Usage: "HAProxy master CLI socket, -S (default: haproxy-master.sock next to the destination)"},
		&cli.StringFlag{Name: "caddy-bin", EnvVars: []string{"RENDERER_CADDY_BIN"}, Value: "caddy", Usage: "caddy binary"},
		&cli.StringFlag{Name: "caddy-admin", EnvVars: []string{"RENDERER_CADDY_ADMIN"}, Value: "127.0.0.1:2019", Usage: "Caddy admin API address"},
		&cli.StringFlag{Name: "validate-cmd", EnvVars: []string{"RENDERER_VALIDATE_CMD"}, Usage: "validate with this shell command instead of the proxy; {{path}} = staged file"},

		&cli.StringFlag{Name: "wait", EnvVars: []string{"RENDERER_WAIT"}, Value: "20ms:1s", Usage: "MIN:MAX reload debounce: reload MIN after the last change, at most MAX after the first"},
		&cli.DurationFlag{Name: "min-reload-gap", EnvVars: []string{"RENDERER_MIN_RELOAD_GAP"}, Value: 250 * time.Millisecond, Usage: "minimum time between two reloads of a proxy"},
		&cli.DurationFlag{Name: "command-timeout", EnvVars: []string{"RENDERER_COMMAND_TIMEOUT"}, Value: 10 * time.Second, Usage: "timeout of each validate command and of a reload to take"},
		&cli.IntFlag{Name: "keep", EnvVars: []string{"RENDERER_KEEP"}, Value: 5, Usage: "good generations kept per template for rollback"},
		&cli.Float64Flag{Name: "max-removal", EnvVars: []string{"RENDERER_MAX_REMOVAL"}, Value: 0.5, Usage: "stale guard: hold a render that removes more than this fraction of a proxy's backends"},
		&cli.DurationFlag{Name: "hold-down", EnvVars: []string{"RENDERER_HOLD_DOWN"}, Value: 30 * time.Second, Usage: "stale guard: how long a suspicious render is held before it is applied"},
		&cli.BoolFlag{Name: "runtime-apply", EnvVars: []string{"RENDERER_RUNTIME_APPLY"}, Value: true, Usage: "apply a change of membership only (servers of existing upstreams/backends) through the proxy's runtime interface (HAProxy's CLI, the nginx Lua balancer endpoint, Caddy's admin API) instead of a reload; structural changes always reload"},
		&cli.IntFlag{Name: "max-proxy-deaths", EnvVars: []string{"RENDERER_MAX_PROXY_DEATHS"}, Value: 5, Usage: "supervise mode: the renderer exits (code 4) when its proxy dies this many times within a minute; it is restarted with backoff until then"},
		&cli.BoolFlag{Name: "allow-unsafe-functions", EnvVars: []string{"RENDERER_ALLOW_UNSAFE_FUNCTIONS"}, Usage: "allow the plugin and writeToFile template functions"},

		&cli.StringFlag{Name: "status-addr", EnvVars: []string{"RENDERER_STATUS_ADDR"}, Usage: "serve /healthz, /ready, /status and /metrics on this host:port (daemon only; off by default)"},
		&cli.StringFlag{Name: "log-level", EnvVars: []string{"RENDERER_LOG_LEVEL"}, Value: "info", Usage: "debug | info | warn | error"},
		&cli.StringFlag{Name: "log-format", EnvVars: []string{"RENDERER_LOG_FORMAT"}, Value: "text", Usage: "text | json"},
	}
}
