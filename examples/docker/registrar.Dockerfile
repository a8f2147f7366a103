# registrar image: a static binary FROM scratch. It needs the Docker socket
# (read-only is enough) and the local Consul agent.
#   docker build -f examples/docker/registrar.Dockerfile -t switchyard/registrar .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /registrar ./registrar

FROM scratch
COPY --from=build /registrar /registrar
ENTRYPOINT ["/registrar"]
