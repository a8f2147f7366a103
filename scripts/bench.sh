#!/usr/bin/env bash
# bench.sh runs a benchmark against the real components and prints its
# figures. Every benchmark talks only to 127.0.0.1 and to containers it
# created, and removes what it started.
#
#   scripts/bench.sh registrar [flags]   burst, single-start latency, start-up, chaos
#   scripts/bench.sh renderer  [flags]   latency vs consul-template, reloads under a burst
set -euo pipefail
cd "$(dirname "$0")/.."
envfile=$(scripts/setup.sh --bench)
# shellcheck disable=SC1090
source "$envfile"
which=${1:-}
case "$which" in
registrar | renderer)
	shift
	go run "./scripts/bench/$which" "$@"
	;;
*)
	echo "usage: scripts/bench.sh registrar|renderer [flags]" >&2
	exit 2
	;;
esac
