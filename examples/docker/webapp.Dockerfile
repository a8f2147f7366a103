# The demo web app (scripts/fixtures/webapp), FROM scratch.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
COPY scripts/fixtures/webapp ./scripts/fixtures/webapp
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /webapp ./scripts/fixtures/webapp

FROM scratch
COPY --from=build /webapp /webapp
EXPOSE 8080
ENTRYPOINT ["/webapp"]
