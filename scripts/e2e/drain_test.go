package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// Draining, end to end: three instances of an app that keeps serving for
// appDrain after SIGTERM, a request loop through nginx, and `docker stop`
// of one instance. With draining on, the registrar puts the instance into
// Consul maintenance at the SIGTERM, the renderer drops it and reloads
// nginx while it still serves: no request fails. With draining off, the
// instance stays in rotation until it died and was deregistered.
const (
	appDrain    = 3 * time.Second
	stopTimeout = 10 // seconds, longer than appDrain: the app exits on its own
)

func TestDockerStopDrainsWithoutFailedRequests(t *testing.T) {
	on := drainRun(t, "on")
	off := drainRun(t, "off", "--drain=false")
	t.Logf("failed requests during docker stop: draining on %d/%d, draining off %d/%d (first off: %s)", on.failed, on.sent, off.failed, off.sent, off.first)
	if on.failed != 0 {
		t.Errorf("draining on: %d of %d requests failed, want 0 (first: %s)", on.failed, on.sent, on.first)
	}
	if off.failed == 0 {
		t.Logf("draining off: no request failed in this run (nginx retried them all); nothing to compare")
	}
}

type loopResult struct {
	sent, failed int64
	first        string
}

// drainRun starts a stack, three instances, and stops one of them under a
// bounded request loop; it returns what the loop saw.
func drainRun(t *testing.T, name string, registrarArgs ...string) loopResult {
	t.Helper()
	s := startStack(t, registrarArgs...)
	svc := testenv.RandomName("drain-" + name)
	host := svc + ".localhost"
	var victim string
	for i, n := range []string{"a", "b", "c"} {
		ctr := testenv.RunContainer(t, testenv.RunOptions{
			Labels: map[string]string{"SERVICE_NAME": svc}, Ports: []string{"8080"},
			Env:         map[string]string{"NAME": n, "WEBAPP_DRAIN": appDrain.String()},
			StopTimeout: stopTimeout,
		})
		if i == 0 {
			victim = ctr.ID
		}
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		seen, err := s.backendsSeen(host, 12)
		if err != nil {
			return err
		}
		if len(seen) != 3 {
			return fmt.Errorf("want 3 backends in rotation, saw %v", seen)
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(t.Context(), appDrain+5*time.Second)
	defer cancel()
	var res loopResult
	var wg sync.WaitGroup
	loop(ctx, s, host, &res, &wg)
	time.Sleep(500 * time.Millisecond) // the loop runs against all three first
	c := testenv.Docker(t)
	if err := c.StopContainer(victim, stopTimeout); err != nil {
		t.Fatalf("docker stop: %v", err)
	}
	wg.Wait()
	t.Logf("draining %s: %d sent, %d failed", name, res.sent, res.failed)
	if res.sent < 100 {
		t.Fatalf("draining %s: only %d requests sent; the loop did not run", name, res.sent)
	}
	return res
}

// loop sends POSTs for host through nginx from 4 workers, each at most one
// every pace, until ctx is done
// or maxRequests were sent (a bound, not expected to be reached: the
// window is what counts). POST, because nginx does not resend a non-idempotent
// request to another backend once it was sent: a backend closing under it
// shows as a failure, as it would for a real client's write. A new client
// connection per request: nginx's reload closes idle client keep-alive
// connections, a race of the client's with nginx that no registrar can
// drain away (clients retry it; Go's does for GET only).
func loop(ctx context.Context, s *stack, host string, res *loopResult, wg *sync.WaitGroup) {
	const (
		maxRequests = 50000
		pace        = 5 * time.Millisecond
	)
	var mu sync.Mutex
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if atomic.AddInt64(&res.sent, 1) > maxRequests {
					atomic.AddInt64(&res.sent, -1)
					return
				}
				next := time.Now().Add(pace)
				if err := post(ctx, client, s.listen, host); err != nil && ctx.Err() == nil {
					atomic.AddInt64(&res.failed, 1)
					mu.Lock()
					if res.first == "" {
						res.first = err.Error()
					}
					mu.Unlock()
				}
				time.Sleep(time.Until(next))
			}
		}()
	}
}

func post(ctx context.Context, client *http.Client, addr, host string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/", bytes.NewReader([]byte("x")))
	if err != nil {
		return err
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
