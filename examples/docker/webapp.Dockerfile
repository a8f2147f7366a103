# The demo web app (scripts/fixtures/webapp): a static binary on an empty
# image that answers every request with its instance name, /health, and
# `webapp probe` for a HEALTHCHECK without a shell.
#
#   docker build -f examples/docker/webapp.Dockerfile -t switchyard/demo-webapp .
#
# Build arguments and stages as in registrar.Dockerfile: GO_IMAGE
# (golang:1.26-bookworm), BASE_IMAGE (scratch); `--target runtime` plus a
# binary built outside where GO_IMAGE cannot be pulled (scripts/demo.sh
# builds the same image that way).
ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=scratch

FROM ${BASE_IMAGE} AS runtime
EXPOSE 8080
ENTRYPOINT ["/webapp"]

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
COPY scripts/fixtures/webapp/ scripts/fixtures/webapp/
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/webapp ./scripts/fixtures/webapp

FROM runtime AS release
COPY --from=build /out/webapp /webapp
