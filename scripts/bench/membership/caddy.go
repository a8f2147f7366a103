package main

import (
	"fmt"
	"strconv"
)

// caddyKind runs Caddy. It serves from one process, so there are no
// worker generations to count. Each pipeline gets an admin API port and a
// DNS server port (the renderer's, for the template's dynamic pools) of
// its own; consul-template runs no DNS server, so its Caddy's lookups fail
// and it serves the upstreams written in the file, as the template says.
var caddyKind = &proxyKind{
	name: "caddy", tmpl: "Caddyfile.tmpl", conf: "Caddyfile", comm: "caddy", binEnv: "SWITCHYARD_CADDY",
	rendererArgs: func(p *pipeline) []string {
		return []string{"--caddy-bin", p.bin, "--caddy-admin", p.admin}
	},
	serve: func(p *pipeline) []string {
		return []string{p.bin, "run", "--config", p.conf, "--adapter", "caddyfile"}
	},
	// What `systemctl reload caddy` does: caddy reload through the admin API.
	reload: func(p *pipeline) string {
		return fmt.Sprintf("%s reload --config %s --adapter caddyfile --address %s || true", p.bin, p.conf, p.admin)
	},
	env: func(p *pipeline) []string {
		return []string{"SWITCHYARD_LISTEN=" + p.listen, "SWITCHYARD_CADDY_ADMIN=" + p.admin, "RENDERER_CADDY_ADMIN=" + p.admin,
			"SWITCHYARD_CADDY_RESOLVER=127.0.0.1:" + strconv.Itoa(p.aux)}
	},
}
