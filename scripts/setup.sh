#!/usr/bin/env bash
# setup.sh installs every real dependency the tests and the demo use, and is
# safe to run again: each step checks before it acts. Called by test.sh and
# demo.sh; prints the versions it found and the env file the others source.
#
#   nginx, haproxy, caddy, wrk, hyperfine  Debian packages
#   libnginx-mod-stream                     nginx TCP routes (stream {}, issue 10)
#   libnginx-mod-http-lua, lua-resty-core   nginx's Lua module (with
#                                           libnginx-mod-http-ndk): the shipped
#                                           nginx template's membership
#                                           endpoint and balancer (issue 9)
#   consul                                  built from the Go module proxy at
#                                           a pinned release, cached outside the
#                                           repo under $SWITCHYARD_CACHE
#   Docker Engine                           must answer; started if it does not
#   consul-template (with --bench only)     its own binary, for the side-by-side
#                                           renderer benchmark
set -euo pipefail

CONSUL_VERSION=${CONSUL_VERSION:-1.20.2}
CACHE=${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}
CONSUL_BIN="$CACHE/consul-$CONSUL_VERSION/consul"

log() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_get_install() {
	[ $# -eq 0 ] && return 0
	log "installing $*"
	if [ $apt_updated = 0 ]; then
		as_root apt-get update -qq >&2
		apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >&2
}

# apt_install BIN:PKG...: installs PKG when BIN is not on PATH.
apt_install() {
	local missing=()
	for pair in "$@"; do
		local bin=${pair%%:*} pkg=${pair##*:}
		command -v "$bin" >/dev/null 2>&1 || missing+=("$pkg")
	done
	apt_get_install ${missing[@]+"${missing[@]}"}
}

dpkg_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# dpkg_install PKG...: installs the packages dpkg does not have, for
# packages with no binary to look for (nginx modules, Lua libraries).
dpkg_install() {
	local missing=()
	for pkg in "$@"; do
		dpkg_installed "$pkg" || missing+=("$pkg")
	done
	apt_get_install ${missing[@]+"${missing[@]}"}
}

# Debian's nginx package starts a system nginx on port 80 on install; our tests
# and demo run their own nginx with their own prefix, so stop the system one.
stop_system_nginx() {
	if pgrep -f 'nginx: master process /usr/sbin/nginx -g' >/dev/null 2>&1; then
		as_root /usr/sbin/nginx -s quit >/dev/null 2>&1 || true
	fi
	for svc in nginx haproxy caddy; do
		as_root service "$svc" stop >/dev/null 2>&1 || true
	done
}

build_consul() {
	[ -x "$CONSUL_BIN" ] && return 0
	log "building consul v$CONSUL_VERSION from the Go module proxy (about 5 minutes, once; cached in $CACHE)"
	local work
	work=$(mktemp -d)
	# Consul's own go.mod replaces its submodules with local paths, which a
	# dependent module cannot use; require them at the versions it lists and
	# copy its exclude lines, so the build resolves the same graph.
	local mod
	mod=$(cd "$work" && GONOSUMDB=github.com/hashicorp/consul GOFLAGS=-mod=mod go mod download -json "github.com/hashicorp/consul@v$CONSUL_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
	{
		echo "module consulbuild"
		echo
		echo "go 1.22"
		echo
		echo "require github.com/hashicorp/consul v$CONSUL_VERSION"
		echo
		echo "require ("
		grep -E '^\s+github.com/hashicorp/consul/(api|sdk|proto-public|envoyextensions|troubleshoot) v' "$mod" | sort -u
		echo ")"
		echo
		sed -n '/^exclude (/,/^)/p' "$mod"
	} >"$work/go.mod"
	printf 'package main\n\nimport _ "github.com/hashicorp/consul"\n' >"$work/tools.go"
	(
		cd "$work"
		# The checksum database has no entries for some of these submodule
		# tags (it answers 404), so skip it for consul's own modules only;
		# everything else is still verified.
		export GONOSUMDB=github.com/hashicorp/consul
		GOFLAGS=-mod=mod go mod tidy >&2 2>&1 || true
		mkdir -p "$(dirname "$CONSUL_BIN")"
		CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags="-s -w" -o "$CONSUL_BIN.tmp" github.com/hashicorp/consul
	)
	mv "$CONSUL_BIN.tmp" "$CONSUL_BIN"
	rm -rf "$work"
}

# consul-template's own binary is only for the renderer benchmark, which
# measures us side by side with it; `setup.sh --bench` builds it.
CONSUL_TEMPLATE_VERSION=${CONSUL_TEMPLATE_VERSION:-0.42.1}
CONSUL_TEMPLATE_BIN="$CACHE/consul-template-$CONSUL_TEMPLATE_VERSION/consul-template"
build_consul_template() {
	[ -x "$CONSUL_TEMPLATE_BIN" ] && return 0
	log "building consul-template v$CONSUL_TEMPLATE_VERSION (for the benchmark)"
	GOBIN="$(dirname "$CONSUL_TEMPLATE_BIN")" CGO_ENABLED=0 go install "github.com/hashicorp/consul-template@v$CONSUL_TEMPLATE_VERSION"
}

docker_answers() { docker info >/dev/null 2>&1; }

ensure_docker() {
	docker_answers && return 0
	apt_install docker:docker.io
	if ! docker_answers; then
		log "starting dockerd in the background (log: /var/log/switchyard-dockerd.log)"
		as_root sh -c 'nohup dockerd >/var/log/switchyard-dockerd.log 2>&1 &'
		for _ in $(seq 1 60); do
			docker_answers && return 0
			sleep 1
		done
		log "Docker Engine did not answer within 60s; see /var/log/switchyard-dockerd.log"
		return 1
	fi
}

main() {
	command -v go >/dev/null || { log "go is required (Go 1.26)"; exit 1; }
	apt_install nginx:nginx haproxy:haproxy caddy:caddy wrk:wrk hyperfine:hyperfine curl:curl
	dpkg_install libnginx-mod-http-ndk libnginx-mod-http-lua lua-resty-core libnginx-mod-stream
	stop_system_nginx
	ensure_docker
	build_consul
	[ "${1:-}" = "--bench" ] && build_consul_template
	mkdir -p "$CACHE"
	cat >"$CACHE/env" <<ENV
export SWITCHYARD_CONSUL=$CONSUL_BIN
export SWITCHYARD_NGINX=$(command -v nginx)
export SWITCHYARD_HAPROXY=$(command -v haproxy)
export SWITCHYARD_CADDY=$(command -v caddy)
export SWITCHYARD_CONSUL_TEMPLATE=$CONSUL_TEMPLATE_BIN
ENV
	log "consul:  $("$CONSUL_BIN" version | head -n1)"
	log "nginx:   $(nginx -v 2>&1), Lua module $(dpkg-query -W -f='${Version}' libnginx-mod-http-lua), lua-resty-core $(dpkg-query -W -f='${Version}' lua-resty-core)"
	log "haproxy: $(haproxy -v | head -n1)"
	log "caddy:   $(caddy version 2>&1 | head -n1)"
	log "docker:  $(docker version --format 'engine {{.Server.Version}} api {{.Server.APIVersion}}')"
	log "go:      $(go version)"
	echo "$CACHE/env"
}

main "$@"
