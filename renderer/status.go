package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/pipeline"
	"github.com/switchyard/switchyard/renderer/internal/status"
	"github.com/switchyard/switchyard/renderer/internal/supervise"
)

// statusSource copies the pipeline's and the supervisor's state into a
// status.Snapshot. Both copy under their own locks, so it is safe from the
// HTTP server's goroutines.
type statusSource struct {
	targets []pipeline.Target
	pipe    *pipeline.Pipeline
	sup     *supervise.Supervisor
}

func (s statusSource) Snapshot() status.Snapshot {
	var snap status.Snapshot
	byDest := s.pipe.Status()
	for _, t := range s.targets {
		st := byDest[filepath.Clean(t.Dest)]
		snap.Templates = append(snap.Templates, status.Template{
			Source: t.Template, Dest: t.Dest, Proxy: t.Proxy,
			Accepted: st.Accepted, Swaps: int64(st.Swaps), LastSwap: st.LastSwap,
			LastError: errString(st.LastError), Rejected: int64(st.Rejected),
			Holds: int64(st.Held), HeldSince: st.HeldSince,
			HeldBackendsBefore: st.HeldBackendsBefore, HeldBackendsAfter: st.HeldBackendsAfter,
			HeldEmptied: st.HeldEmptied,
		})
	}
	for name, ps := range s.sup.ProxyStats() {
		snap.Proxies = append(snap.Proxies, status.Proxy{
			Name: name, Reloads: ps.Reloads, ReloadFailures: ps.FailedReloads,
			Rollbacks: ps.Rollbacks, LastReload: ps.LastReload, LastError: errString(ps.LastError),
		})
	}
	st := s.sup.Stats()
	snap.Runner = status.Runner{Rebuilds: st.Rebuilds, OutageRebuilds: st.OutageRebuilds}
	return snap
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

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
