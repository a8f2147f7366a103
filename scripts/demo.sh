#!/usr/bin/env bash
# demo.sh runs the whole pipeline on this machine, nothing pulled from a
# registry: a Consul dev agent, registrar, renderer supervising nginx, and two
# containers of one service "web" built FROM scratch from scripts/fixtures/webapp.
#
#   scripts/demo.sh          start, show traffic alternating, stay in the
#                            foreground; Ctrl-C stops and removes everything
#   scripts/demo.sh up -d    start and return (for scripts)
#   scripts/demo.sh down     stop everything a demo started
#
# Settings: DEMO_PORT (nginx, default 8080), DEMO_CONSUL_PORT (default 8500),
# DEMO_DIR (state: logs, nginx prefix; default .demo in the repo), DEMO_NAME
# (container name prefix and label value, default switchyard-demo).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DEMO_PORT=${DEMO_PORT:-8080}
DEMO_CONSUL_PORT=${DEMO_CONSUL_PORT:-8500}
DEMO_DIR=${DEMO_DIR:-$ROOT/.demo}
DEMO_NAME=${DEMO_NAME:-switchyard-demo}
DEMO_LABEL=switchyard.demo=$DEMO_NAME
IMAGE=switchyard-demo/webapp:latest
LISTEN=127.0.0.1:$DEMO_PORT
CONSUL_ADDR=127.0.0.1:$DEMO_CONSUL_PORT

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

down() {
	local quiet=${1:-}
	for name in renderer registrar consul; do
		local pidf="$DEMO_DIR/$name.pid"
		[ -f "$pidf" ] || continue
		local pid
		pid=$(cat "$pidf")
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid" 2>/dev/null || true
			for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			kill -KILL "$pid" 2>/dev/null || true
		fi
		rm -f "$pidf"
	done
	local ids
	ids=$(docker ps -aq --filter "label=$DEMO_LABEL" 2>/dev/null || true)
	[ -n "$ids" ] && docker rm -f $ids >/dev/null
	[ -n "$quiet" ] || say "demo stopped; logs kept in $DEMO_DIR"
}

start_bg() { # name, then the command; logs to $DEMO_DIR/name.log
	local name=$1
	shift
	"$@" >"$DEMO_DIR/$name.log" 2>&1 &
	echo $! >"$DEMO_DIR/$name.pid"
}

wait_for() { # description, seconds, command...
	local what=$1 secs=$2
	shift 2
	for _ in $(seq 1 $((secs * 10))); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "demo: $what did not happen within ${secs}s; logs in $DEMO_DIR" >&2
	return 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

up() {
	trap 'echo "demo: a step failed; stopping what it started (logs in $DEMO_DIR)" >&2; down quiet' ERR
	envfile=$(scripts/setup.sh)
	# shellcheck disable=SC1090
	source "$envfile"
	down quiet
	for p in "$DEMO_PORT" "$DEMO_CONSUL_PORT"; do
		port_free "$p" || { echo "demo: port $p on 127.0.0.1 is in use; set DEMO_PORT / DEMO_CONSUL_PORT" >&2; exit 1; }
	done
	mkdir -p "$DEMO_DIR/bin" "$DEMO_DIR/nginx/logs" "$DEMO_DIR/image"

	say "building registrar, renderer and the demo web app (FROM scratch)"
	go build -o "$DEMO_DIR/bin/registrar" ./registrar
	go build -o "$DEMO_DIR/bin/renderer" ./renderer
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$DEMO_DIR/image/webapp" ./scripts/fixtures/webapp
	printf 'FROM scratch\nCOPY webapp /webapp\nEXPOSE 8080\nENTRYPOINT ["/webapp"]\n' >"$DEMO_DIR/image/Dockerfile"
	# stderr to a log: the legacy builder prints a deprecation notice users need not see
	docker build -q -t "$IMAGE" "$DEMO_DIR/image" >/dev/null 2>"$DEMO_DIR/build.log" || { cat "$DEMO_DIR/build.log" >&2; false; }

	say "starting Consul $("$SWITCHYARD_CONSUL" version | head -n1 | cut -d' ' -f2) dev agent on $CONSUL_ADDR"
	start_bg consul "$SWITCHYARD_CONSUL" agent -dev -node switchyard-demo \
		-bind 127.0.0.1 -client 127.0.0.1 -http-port "$DEMO_CONSUL_PORT" \
		-serf-lan-port $((DEMO_CONSUL_PORT + 1)) -serf-wan-port $((DEMO_CONSUL_PORT + 2)) \
		-server-port $((DEMO_CONSUL_PORT + 3)) -dns-port -1 -grpc-port -1 -grpc-tls-port -1
	wait_for "Consul leader election" 30 sh -c "curl -sf http://$CONSUL_ADDR/v1/status/leader | grep -q 127"

	say "starting registrar (Docker -> Consul)"
	start_bg registrar "$DEMO_DIR/bin/registrar" --resync 10 "consul://$CONSUL_ADDR"

	say "starting renderer (Consul -> nginx on $LISTEN)"
	SWITCHYARD_LISTEN=$LISTEN start_bg renderer "$DEMO_DIR/bin/renderer" \
		--consul-addr "$CONSUL_ADDR" \
		--template "$ROOT/templates/nginx.conf.tmpl:$DEMO_DIR/nginx/nginx.conf" \
		--proxy nginx --proxy-mode supervise --nginx-prefix "$DEMO_DIR/nginx" --wait 100ms:1s

	say "starting two containers of service \"web\""
	for i in 1 2; do
		docker run -d --name "$DEMO_NAME-web-$i" --label "$DEMO_LABEL" \
			--label SERVICE_NAME=web --label SERVICE_CHECK_HTTP=/health --label SERVICE_CHECK_INTERVAL=2s \
			-e NAME="web-$i" -p 127.0.0.1::8080 "$IMAGE" >/dev/null
	done

	wait_for "web reachable through nginx" 60 sh -c \
		"curl -sf -H 'Host: web.localhost' http://$LISTEN/ >/dev/null && \
		 [ \$(for i in 1 2 3 4 5 6; do curl -s -H 'Host: web.localhost' http://$LISTEN/; done | sort -u | wc -l) -ge 2 ]"

	say "six requests through nginx (they alternate between the two containers):"
	for _ in 1 2 3 4 5 6; do
		printf '  $ curl -H "Host: web.localhost" http://%s/\n  ' "$LISTEN"
		curl -s -H 'Host: web.localhost' "http://$LISTEN/"
	done

	cat <<NEXT

Try next (in another terminal):
  scale up:     docker run -d --label $DEMO_LABEL --label SERVICE_NAME=web -e NAME=web-3 -p 127.0.0.1::8080 $IMAGE
  stop one:     docker stop $DEMO_NAME-web-1
  watch config: watch -n1 cat $DEMO_DIR/nginx/nginx.conf
  traffic:      for i in \$(seq 10); do curl -s -H 'Host: web.localhost' http://$LISTEN/; done
  catalog:      curl -s http://$CONSUL_ADDR/v1/catalog/service/web
  logs:         tail -f $DEMO_DIR/registrar.log $DEMO_DIR/renderer.log
  stop:         Ctrl-C here, or scripts/demo.sh down
NEXT
}

case "${1:-up}" in
up)
	if [ "${2:-}" = "-d" ]; then
		up
	else
		trap 'echo; down; exit 0' INT TERM
		up
		echo
		say "running; Ctrl-C stops everything"
		while kill -0 "$(cat "$DEMO_DIR/renderer.pid")" 2>/dev/null; do sleep 1; done
		echo "demo: renderer exited; see $DEMO_DIR/renderer.log" >&2
		down
		exit 1
	fi
	;;
down) down ;;
*)
	echo "usage: scripts/demo.sh [up [-d] | down]" >&2
	exit 2
	;;
esac
