package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// A --status-addr that cannot be bound is a usage error found before the
// first request to Docker or Consul.
func TestStatusAddrInUseFailsBeforeDockerAndConsul(t *testing.T) {
	var requests atomic.Int32
	count := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "nope", http.StatusInternalServerError)
	})
	consul := httptest.NewServer(count)
	defer consul.Close()
	docker := httptest.NewServer(count)
	defer docker.Close()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	t.Setenv("DOCKER_HOST", "")
	var stderr bytes.Buffer
	app := newApp(&stderr, run)
	app.ExitErrHandler = func(*cli.Context, error) {} // report, do not exit
	err = app.RunContext(t.Context(), []string{"registrar", "--node-name", "n1", "--on-shutdown", "deregister",
		"--retry-attempts", "0", "--status-addr", busy.Addr().String(),
		"--docker-host", "tcp://" + docker.Listener.Addr().String(), "--consul-addr", consul.URL})
	var ec cli.ExitCoder
	if !errors.As(err, &ec) || ec.ExitCode() != 2 || !strings.Contains(err.Error(), "--status-addr") {
		t.Fatalf("error %v, want exit code 2 naming --status-addr", err)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("%d requests reached Docker or Consul before the status address was bound", n)
	}
}

// The status server answers from the start: /healthz 200, /ready 503
// saying what start-up waits for, /status the same as JSON.
func TestStatusAnswersDuringStartUp(t *testing.T) {
	consul := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no leader", http.StatusInternalServerError)
	}))
	defer consul.Close()
	addr := freeAddr(t)
	t.Setenv("DOCKER_HOST", "")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		app := newApp(io.Discard, run)
		app.ExitErrHandler = func(*cli.Context, error) {}
		done <- app.RunContext(ctx, []string{"registrar", "--node-name", "n1", "--retry-interval", "50",
			"--status-addr", addr, "--docker-host", "tcp://127.0.0.1:1", "--consul-addr", consul.URL})
	}()
	defer func() { cancel(); <-done }()

	get := func(path string) (int, string, error) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		code, body, err := get("/ready")
		if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "start-up: waiting for consul") {
			return fmt.Errorf("/ready: %d %q %v", code, body, err)
		}
		return nil
	})
	if code, _, err := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %v", code, err)
	}
	code, body, err := get("/status")
	var st struct {
		Ready   bool
		Reason  string
		Refused []any
	}
	if err != nil || code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || st.Ready || st.Refused == nil {
		t.Errorf("/status: %d %s %v", code, body, err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
}
