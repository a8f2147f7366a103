package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// faultyDocker puts a unix socket of ours in front of the real engine. It
// passes everything through (the event stream too) except the inspect of
// chosen containers, which it makes hang, as dockerd does when one
// container's lock is stuck, or fail with a 500.
type faultyDocker struct {
	Host string // DOCKER_HOST for the registrar

	mu     sync.Mutex
	faults map[string]string // container ID -> "hang" | "fail"
}

var inspectPath = regexp.MustCompile(`^(/v[0-9.]+)?/containers/([^/]+)/json$`)

func startFaultyDocker(t *testing.T) *faultyDocker {
	t.Helper()
	up, err := url.Parse(testenv.Docker(t).Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	network, addr := "unix", up.Path
	if up.Scheme != "unix" {
		network, addr = "tcp", up.Host
	}
	// Short path: a unix socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "sy-docker")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("unix", filepath.Join(dir, "docker.sock"))
	if err != nil {
		t.Fatal(err)
	}
	f := &faultyDocker{Host: "unix://" + l.Addr().String(), faults: map[string]string{}}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "docker" },
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}},
		FlushInterval: -1, // stream /events as they come
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m := inspectPath.FindStringSubmatch(r.URL.Path); m != nil {
			switch f.fault(m[2]) {
			case "hang":
				<-r.Context().Done() // until the client gives up
				return
			case "fail":
				http.Error(w, `{"message":"injected fault"}`, http.StatusInternalServerError)
				return
			}
		}
		proxy.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return f
}

func (f *faultyDocker) fault(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.faults[id]
}

// set makes the inspect of id hang, fail, or (mode "") work again.
func (f *faultyDocker) set(id, mode string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if mode == "" {
		delete(f.faults, id)
	} else {
		f.faults[id] = mode
	}
}

// statusDoc is the registrar's /status.
type statusDoc struct {
	Ready            bool       `json:"ready"`
	Reason           string     `json:"reason"`
	LastResync       *time.Time `json:"last_resync"`
	TakeoversRefused int        `json:"takeovers_refused"`
	Refused          []struct {
		ServiceID   string `json:"service_id"`
		ContainerID string `json:"container_id"`
		Container   string `json:"container"`
		Holder      string `json:"holder"`
	} `json:"refused"`
}

func getStatus(addr string) (statusDoc, error) {
	var st statusDoc
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("/status: %s: %s", resp.Status, b)
	}
	return st, json.Unmarshal(b, &st)
}

// waitReady waits until /ready answers 200 (ready) or 503 with a reason
// containing reason, and /status agrees.
func waitReady(t *testing.T, addr string, ready bool, reason string) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() error {
		resp, err := http.Get("http://" + addr + "/ready")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.StatusCode == http.StatusOK; got != ready {
			return fmt.Errorf("/ready %s: %s", resp.Status, b)
		}
		st, err := getStatus(addr)
		if err != nil {
			return err
		}
		if st.Ready != ready || !regexp.MustCompile(reason).MatchString(st.Reason) {
			return fmt.Errorf("/status ready=%v reason %q, want ready=%v reason matching %q", st.Ready, st.Reason, ready, reason)
		}
		return nil
	})
}
