# switchyard/renderer-nginx: the renderer as PID 1, supervising nginx.
# It renders the first complete config from Consul, validates it
# (nginx -t), then starts nginx as its child (-p /var/lib/switchyard/nginx),
# and after every validated change either pushes the new members of the
# upstreams that changed to nginx's Lua balancer (a membership change: no
# reload, no dropped keep-alive connection) or reloads it and checks the
# reload took; it reaps orphans and stops nginx gracefully on `docker stop`.
#
#   docker build -f examples/docker/renderer-nginx.Dockerfile -t switchyard/renderer-nginx .
#   docker run -d --name=renderer --net=host switchyard/renderer-nginx
#     # Consul at 127.0.0.1:8500 (the host's agent); nginx on 0.0.0.0:80
#   curl -H 'Host: web.localhost' http://127.0.0.1/
#
# Everything is set through the environment (every renderer flag has a
# variable, see README.md); the defaults below are the image's:
#   CONSUL_HTTP_ADDR      Consul agent (unset: 127.0.0.1:8500)
#   SWITCHYARD_LISTEN     nginx's listen address (0.0.0.0:80)
#   SWITCHYARD_NGINX_API_PORT  the membership endpoint's port, always on
#                         127.0.0.1 inside the container (9180)
#   RENDERER_RUNTIME_APPLY  false: every change reloads nginx
#   RENDERER_TEMPLATES    SRC:DEST[,SRC:DEST...]; the shipped template is
#                         baked in at /etc/switchyard/templates/nginx.conf.tmpl
#   RENDERER_STATUS_ADDR  /healthz, /ready, /status, /metrics (off; e.g. 0.0.0.0:9090)
# Live files and kept generations are in /var/lib/switchyard/nginx
# (nothing there needs to survive: a new container renders the same bytes
# from Consul, and nginx serves the members the file names).
#
# Build arguments:
#   GO_IMAGE    the Go toolchain the renderer is compiled with (golang:1.26-bookworm)
#   BASE_IMAGE  Debian 12 (debian:bookworm-slim): the runtime stage installs
#               Debian's nginx 1.22 with its Lua module (libnginx-mod-http-lua
#               0.10.23, libnginx-mod-http-ndk, lua-resty-core 0.1.25) and
#               its stream module (TCP routes), the release the renderer is
#               tested with. A base that has them already
#               (/usr/lib/nginx/modules/ngx_http_lua_module.so and
#               ngx_stream_module.so, and a /bin/sh) skips apt, so the image
#               builds offline.
#
# Stages, in this order on purpose: the classic builder (no BuildKit, e.g.
# docker-compose v1) builds every stage up to the target, so "runtime"
# comes first and needs nothing but BASE_IMAGE:
#   runtime  BASE_IMAGE with nginx, its Lua module, the template and the
#            image's settings, no renderer
#   build    compiles the renderer in GO_IMAGE
#   release  runtime + the compiled renderer (the default target)
ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="switchyard/renderer-nginx" \
      org.opencontainers.image.description="Consul catalog -> validated nginx config; the renderer supervises nginx and applies membership changes through its Lua balancer"
RUN if [ ! -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then \
        apt-get update && \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            nginx libnginx-mod-http-ndk libnginx-mod-http-lua lua-resty-core libnginx-mod-stream && \
        rm -rf /var/lib/apt/lists/*; \
    fi
COPY templates/nginx.conf.tmpl /etc/switchyard/templates/nginx.conf.tmpl
WORKDIR /var/lib/switchyard/nginx
ENV RENDERER_PROXY=nginx \
    RENDERER_PROXY_MODE=supervise \
    RENDERER_NGINX_BIN=/usr/sbin/nginx \
    RENDERER_NGINX_PREFIX=/var/lib/switchyard/nginx \
    RENDERER_TEMPLATES=/etc/switchyard/templates/nginx.conf.tmpl:/var/lib/switchyard/nginx/nginx.conf \
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
