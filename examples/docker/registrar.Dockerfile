# switchyard/registrar: the registrar, a static binary on an empty image.
# A drop-in for gliderlabs/registrator: its documented run line works with
# only the image name changed (the socket mounted at /tmp/docker.sock is
# found there, the consul:// URI is the argument of the ENTRYPOINT):
#
#   docker build -f examples/docker/registrar.Dockerfile -t switchyard/registrar .
#   docker run -d --name=registrator --net=host \
#     --volume=/var/run/docker.sock:/tmp/docker.sock \
#     switchyard/registrar consul://localhost:8500
#
# Flags go before the URI (registrator's rule), e.g. `-ip 10.0.0.12
# consul://localhost:8500`; every flag also reads an environment variable
# (-e REGISTRAR_RESYNC=30, -e CONSUL_HTTP_TOKEN_FILE=/run/secrets/consul).
# The image has no CA bundle: for consul-tls:// mount your CA and pass
# --consul-cacert.
#
# Build arguments:
#   GO_IMAGE    the Go toolchain the binary is compiled with (golang:1.26-bookworm)
#   BASE_IMAGE  what the binary runs on (scratch); any image works
#
# Stages, in this order on purpose: the classic builder (no BuildKit, e.g.
# docker-compose v1) builds every stage up to the target, so "runtime"
# comes first and needs nothing but BASE_IMAGE:
#   runtime  BASE_IMAGE with the image's settings, without the binary
#   build    compiles the binary in GO_IMAGE
#   release  runtime + the compiled binary (the default target)
# Where GO_IMAGE cannot be pulled (an air-gapped host, our tests), build
# `--target runtime` and add a binary compiled outside, as release does:
#   CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o bin/registrar ./registrar
#   docker build -f examples/docker/registrar.Dockerfile --target runtime -t registrar-runtime .
#   printf 'FROM registrar-runtime\nCOPY bin/registrar /usr/local/bin/registrar\n' |
#     docker build -f - -t switchyard/registrar .
# (scripts/e2e/packaging_test.go does exactly that.)
ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=scratch

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="switchyard/registrar" \
      org.opencontainers.image.description="Docker containers -> local Consul agent (a gliderlabs/registrator successor)"
# It needs the Docker socket (read-only is enough: it only lists, inspects
# and watches events) and the local Consul agent; nothing else, no state.
ENTRYPOINT ["/usr/local/bin/registrar"]

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY registrar/ registrar/
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/registrar ./registrar

FROM runtime AS release
COPY --from=build /out/registrar /usr/local/bin/registrar
