package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// serveStatus serves h on l until ctx is done, then shuts the server down
// and waits for it.
func serveStatus(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("status server: %w", err)
	}
}
