package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/registrar/internal/reconcile"
)

// statusServer answers /healthz, /ready, /status and /metrics on
// --status-addr. It
// is bound before registrar reaches Docker or Consul, so it also answers
// during start-up (not ready, saying what start-up waits for).
type statusServer struct {
	l     net.Listener
	rec   atomic.Pointer[reconcile.Reconciler]
	phase atomic.Pointer[string]
	m     *metrics
}

// listenStatus binds addr; "" means no status server (nil, nil). A failure
// is a usage error: nothing has been touched yet.
func listenStatus(addr string) (*statusServer, error) {
	if addr == "" {
		return nil, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usageError{fmt.Errorf("--status-addr=%s: %w", addr, err)}
	}
	s := &statusServer{l: l, m: newMetrics()}
	s.setPhase("starting")
	return s, nil
}

// setPhase says what start-up waits for; a nil server ignores it.
func (s *statusServer) setPhase(what string) {
	if s != nil {
		s.phase.Store(&what)
	}
}

// setReconciler hands the answers over to the running reconciler.
func (s *statusServer) setReconciler(rec *reconcile.Reconciler) {
	if s != nil {
		s.rec.Store(rec)
	}
}

// consulError counts a failed Consul call made before the reconciler
// runs; a nil server ignores it.
func (s *statusServer) consulError() {
	if s != nil {
		s.m.ConsulError()
	}
}

// recorder is what the reconciler counts into; nil without a server.
func (s *statusServer) recorder() reconcile.Recorder {
	if s == nil {
		return nil
	}
	return s.m
}

func (s *statusServer) status() reconcile.Status {
	if rec := s.rec.Load(); rec != nil {
		return rec.Status()
	}
	return reconcile.Status{Reason: "start-up: " + *s.phase.Load(), Refused: []reconcile.Refusal{}, Checks: map[string]int{}}
}

func (s *statusServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if st := s.status(); !st.Ready {
			http.Error(w, "not ready: "+st.Reason, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.status())
	})
	mux.Handle("GET /metrics", s.m.handler(s.status))
	return mux
}

// serve answers until ctx is done.
func (s *statusServer) serve(ctx context.Context) error {
	srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.l) }()
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
