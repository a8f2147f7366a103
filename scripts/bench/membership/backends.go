package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// backend is one instance of a service: an HTTP server on 127.0.0.1 that
// answers with its own name, and remembers, per pipeline (the
// X-Bench-Pipe header the latency probes send), when a request first and
// last reached it. Requests without the header (the load, health checks)
// are served and not recorded.
type backend struct {
	name string
	port int
	srv  *http.Server

	mu   sync.Mutex
	hits map[string]*hits
}

type hits struct{ first, last time.Time }

func startBackend(name string) (*backend, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", name, err)
	}
	b := &backend{name: name, port: l.Addr().(*net.TCPAddr).Port, hits: map[string]*hits{}}
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second}
	go func() { _ = b.srv.Serve(l) }()
	return b, nil
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if pipe := r.Header.Get("X-Bench-Pipe"); pipe != "" {
		now := time.Now()
		b.mu.Lock()
		h := b.hits[pipe]
		if h == nil {
			h = &hits{first: now}
			b.hits[pipe] = h
		}
		h.last = now
		b.mu.Unlock()
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "hello from %s\n", b.name)
}

// seen returns when pipe's requests first and last reached b (zero
// times if none did).
func (b *backend) seen(pipe string) (first, last time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if h := b.hits[pipe]; h != nil {
		return h.first, h.last
	}
	return time.Time{}, time.Time{}
}

func (b *backend) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if b.srv.Shutdown(ctx) != nil {
		b.srv.Close()
	}
}
