package docker

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/registrar/internal/container"
)

// TestWatchReconnectsAndAsksForResync serves /events on a unix socket that
// the "engine" closes after one event, and fails the next attempt: Watch
// must come back, and ask for a resync after each reconnect.
func TestWatchReconnectsAndAsksForResync(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/events" {
			http.NotFound(w, r)
			return
		}
		switch calls.Add(1) {
		case 2: // the engine is restarting
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
		fmt.Fprintf(w, `{"Type":"container","Action":"start","Actor":{"ID":"c%d"}}`+"\n", calls.Load())
		// Returning closes the stream, as a restarting engine does.
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	src, err := New("unix://"+sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	src.MinBackoff, src.MaxBackoff = time.Millisecond, 10*time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	out := make(chan container.Event, 16)
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, out) }()

	want := []container.Event{{Resync: true}, {ContainerID: "c1", Type: "start"}, {Resync: true}, {ContainerID: "c3", Type: "start"}}
	for i, w := range want {
		select {
		case got := <-out:
			if got != w {
				t.Fatalf("event %d = %+v, want %+v", i, got, w)
			}
		case <-ctx.Done():
			t.Fatalf("event %d never came", i)
		}
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("Watch returned nil on cancel; want ctx.Err()")
	}
}

// TestWatchConnectHasDeadline: an engine that accepts the connection but
// never answers /events (hung dockerd) must not hold Watch forever: the
// connect times out and is retried.
func TestWatchConnectHasDeadline(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		<-r.Context().Done()
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	src, err := New("unix://"+sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	src.Timeout = 100 * time.Millisecond
	src.MinBackoff, src.MaxBackoff = time.Millisecond, 10*time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, make(chan container.Event, 1)) }()
	for calls.Load() < 3 {
		select {
		case <-ctx.Done():
			t.Fatalf("%d connects in 5s: a hung /events is never given up", calls.Load())
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	<-done
}

// TestCallsHonourTheirDeadline: against an engine that accepts requests and
// never answers, list and inspect (the one lock-up seen in the field) give
// up at their context's deadline, which is how the reconciler bounds them.
func TestCallsHonourTheirDeadline(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	src, err := New("unix://"+sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]func(context.Context) error{
		"inspect": func(ctx context.Context) error { _, err := src.Inspect(ctx, "c1"); return err },
		"list":    func(ctx context.Context) error { _, err := src.List(ctx); return err },
		"info":    func(ctx context.Context) error { _, err := src.NodeName(ctx); return err },
	}
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		start := time.Now()
		err := call(ctx)
		cancel()
		if err == nil || time.Since(start) > 5*time.Second {
			t.Errorf("%s against a hung engine: %v after %s", name, err, time.Since(start))
		}
	}
}
