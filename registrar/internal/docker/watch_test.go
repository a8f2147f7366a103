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

	want := []container.Event{{Resync: true}, {ContainerID: "c1"}, {Resync: true}, {ContainerID: "c3"}}
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
