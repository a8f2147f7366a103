#!/usr/bin/env bash
# bench.sh runs a benchmark against the real components and prints its
# figures. Every benchmark talks only to 127.0.0.1 and to containers it
# created, and removes what it started.
#
#   scripts/bench.sh registrar [flags]   burst, single-start latency, start-up, chaos
#   scripts/bench.sh renderer  [flags]   latency vs consul-template, reloads under a burst
#   scripts/bench.sh membership [flags]  catalog changes under load (issue 9): per proxy
#       (nginx, haproxy, caddy if templates/Caddyfile.tmpl exists), the renderer
#       with --runtime-apply, with --runtime-apply=false, and consul-template,
#       side by side: change -> served latency p50/p90, then failed requests,
#       worker generations and old workers left, for keep-alive and
#       new-connection clients, over membership and structural changes.
#       Flags: -changes 50 -interval 250ms -conns 32 -trials 20
#       -proxies nginx,haproxy,caddy -tools switchyard,switchyard-reload,consul-template
#       (one alone measures its latency without the others' load) -drain-wait 0
#       (the proxy's own limit) -keep.
#       Full run about 5-6 minutes on 2 cores; quick look:
#       scripts/bench.sh membership -changes 10 -trials 5 -proxies nginx
#   scripts/bench.sh scale [flags]       issue 11: S services x 3 on a private agent at
#       Consul's default limits; first complete render, connections held, RSS,
#       CPU, WARN lines, for the renderer and consul-template side by side.
#       Flags: -sizes 100,300,1000 -10000 (adds 10000) -timeout 45s -tools -keep.
set -euo pipefail
cd "$(dirname "$0")/.."
envfile=$(scripts/setup.sh --bench)
# shellcheck disable=SC1090
source "$envfile"
which=${1:-}
case "$which" in
registrar | renderer | membership | scale)
	shift
	go run "./scripts/bench/$which" "$@"
	;;
*)
	echo "usage: scripts/bench.sh registrar|renderer|membership|scale [flags]" >&2
	exit 2
	;;
esac
