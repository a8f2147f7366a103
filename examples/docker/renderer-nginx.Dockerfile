# renderer + nginx in one image: the renderer is PID 1, renders the first
# complete config, then starts nginx as its child (--proxy-mode supervise),
# reaps it, and reloads it on every validated change.
#   docker build -f examples/docker/renderer-nginx.Dockerfile -t switchyard/renderer-nginx .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /renderer ./renderer

FROM nginx:1.27-alpine
COPY --from=build /renderer /usr/local/bin/renderer
COPY templates/ /etc/switchyard/templates/
RUN mkdir -p /var/lib/switchyard/nginx/logs
ENV SWITCHYARD_LISTEN=0.0.0.0:80
ENTRYPOINT ["/usr/local/bin/renderer", "--proxy", "nginx", "--proxy-mode", "supervise", \
            "--nginx-prefix", "/var/lib/switchyard/nginx", \
            "--template", "/etc/switchyard/templates/nginx.conf.tmpl:/var/lib/switchyard/nginx/nginx.conf"]
