# switchyard/renderer-haproxy: the renderer as PID 1, supervising HAProxy.
# It renders the first complete config from Consul, validates it
# (haproxy -c), then starts `haproxy -W -S <socket>,mode,600 -f <config>` as
# its child (master-worker mode with the master CLI), reloads it through
# that socket after every validated change, checks each reload took, reaps
# orphans, and stops HAProxy gracefully on `docker stop`.
#
#   docker build -f examples/docker/renderer-haproxy.Dockerfile -t switchyard/renderer-haproxy .
#   docker run -d --name=renderer --net=host --stop-timeout=20 switchyard/renderer-haproxy
#     # Consul at 127.0.0.1:8500 (the host's agent); HAProxy on 0.0.0.0:80
#   curl -H 'Host: web.localhost' http://127.0.0.1/
#
# Everything is set through the environment (every renderer flag has a
# variable, see README.md); the defaults below are the image's:
#   CONSUL_HTTP_ADDR      Consul agent (unset: 127.0.0.1:8500)
#   CONSUL_HTTP_TOKEN_FILE  ACL token file (policy: examples/consul/renderer-policy.hcl)
#   SWITCHYARD_LISTEN     HAProxy's bind address (0.0.0.0:80)
#   RENDERER_TEMPLATES    SRC:DEST[,SRC:DEST...]; the shipped template is
#                         baked in at /etc/switchyard/templates/haproxy.cfg.tmpl.
#                         Your own: mount a directory over /etc/switchyard/templates
#                         (or elsewhere) and point this at it.
#   RENDERER_STATUS_ADDR  /healthz, /ready, /status, /metrics (off; e.g. 0.0.0.0:9090)
# Live files, kept generations and the master socket are in
# /var/lib/switchyard/haproxy (nothing there needs to survive: a new
# container renders the same bytes from Consul). Subcommands work too:
#   docker run --rm --net=host switchyard/renderer-haproxy plan
#
# It runs as root in the container, as the nginx image does: HAProxy binds
# port 80 even with --net=host. To run unprivileged: --user 99:99, a
# writable volume on /var/lib/switchyard/haproxy, and a SWITCHYARD_LISTEN
# port above 1023 (or a bridge network, where Docker lets any user bind).
#
# Build arguments:
#   GO_IMAGE    the Go toolchain the renderer is compiled with (golang:1.26-bookworm)
#   BASE_IMAGE  an image with haproxy on its PATH (haproxy:2.6, the release
#               the renderer's HAProxy support is tested with: Debian 12's)
#
# Stages, in this order on purpose: the classic builder (no BuildKit, e.g.
# docker-compose v1) builds every stage up to the target, so "runtime"
# comes first and needs nothing but BASE_IMAGE:
#   runtime  BASE_IMAGE with the template and the image's settings, no renderer
#   build    compiles the renderer in GO_IMAGE
#   release  runtime + the compiled renderer (the default target)
# Where GO_IMAGE cannot be pulled, build `--target runtime` and add a
# renderer compiled outside, as release does (see registrar.Dockerfile;
# scripts/e2e/packaging_test.go does that, on a base it makes from the
# host's own haproxy).
ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=haproxy:2.6

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="switchyard/renderer-haproxy" \
      org.opencontainers.image.description="Consul catalog -> validated HAProxy config; the renderer supervises HAProxy"
# The official haproxy image runs as user haproxy, stops with SIGUSR1 and
# starts through a shell entrypoint: the renderer is PID 1 instead, and
# SIGTERM is what it turns into a graceful stop of HAProxy.
USER root
COPY templates/haproxy.cfg.tmpl /etc/switchyard/templates/haproxy.cfg.tmpl
WORKDIR /var/lib/switchyard/haproxy
ENV RENDERER_PROXY=haproxy \
    RENDERER_PROXY_MODE=supervise \
    RENDERER_TEMPLATES=/etc/switchyard/templates/haproxy.cfg.tmpl:/var/lib/switchyard/haproxy/haproxy.cfg \
    SWITCHYARD_LISTEN=0.0.0.0:80
EXPOSE 80
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/renderer"]
CMD []

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY renderer/ renderer/
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/renderer ./renderer

FROM runtime AS release
COPY --from=build /out/renderer /usr/local/bin/renderer
