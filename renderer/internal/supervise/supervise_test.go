package supervise

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul-template/renderer"

	"github.com/switchyard/switchyard/renderer/internal/pipeline"
)

type fakeEngine struct {
	stop   chan struct{}
	once   sync.Once
	fatal  chan error
	events chan struct{} // a test sends here when its "pass" is over
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{stop: make(chan struct{}), fatal: make(chan error), events: make(chan struct{}, 1)}
}
func (e *fakeEngine) Start()                  { <-e.stop }
func (e *fakeEngine) Stop()                   { e.once.Do(func() { close(e.stop) }) }
func (e *fakeEngine) Fatal() <-chan error     { return e.fatal }
func (e *fakeEngine) ServerErr() <-chan error { return nil }
func (e *fakeEngine) Events() <-chan struct{} { return e.events }
func (e *fakeEngine) TemplateErrors() []error { return nil }

type fakeProxy struct {
	mu              sync.Mutex
	starts, reloads int
	verifyErr       error
	supervised      bool
	exited          chan struct{}
}

func (f *fakeProxy) Name() string { return "fake" }
func (f *fakeProxy) Start(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts++
	if f.supervised {
		f.exited = make(chan struct{})
	}
	return nil
}
func (f *fakeProxy) Reload(context.Context) error {
	f.mu.Lock()
	f.reloads++
	f.mu.Unlock()
	return nil
}
func (f *fakeProxy) Verify(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.verifyErr
	f.verifyErr = nil
	return err
}
func (f *fakeProxy) Exited() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.exited == nil {
		return nil
	}
	return f.exited
}
func (f *fakeProxy) Stop(context.Context) error { return nil }
func (f *fakeProxy) counts() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts, f.reloads
}

type harness struct {
	dest    string
	pipe    *pipeline.Pipeline
	proxy   *fakeProxy
	sup     *Supervisor
	engines chan *fakeEngine
	cancel  context.CancelFunc
	done    chan error
}

func start(t *testing.T, supervised bool, wmin, wmax time.Duration) *harness {
	t.Helper()
	h := &harness{dest: filepath.Join(t.TempDir(), "proxy.conf"), proxy: &fakeProxy{supervised: supervised},
		engines: make(chan *fakeEngine, 10), done: make(chan error, 1)}
	h.pipe = pipeline.New(context.Background(), pipeline.Options{}, []pipeline.Target{{Template: "t", Dest: h.dest, Proxy: "p"}})
	h.sup = New(Options{
		NewEngine: func() (Engine, error) { e := newFakeEngine(); h.engines <- e; return e, nil },
		Pipeline:  h.pipe,
		Proxies:   map[string]Reloader{"p": h.proxy},
		WaitMin:   wmin, WaitMax: wmax,
	})
	var ctx context.Context
	ctx, h.cancel = context.WithCancel(context.Background())
	go func() { h.done <- h.sup.Run(ctx) }()
	t.Cleanup(func() {
		h.cancel()
		if err := <-h.done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return h
}

func (h *harness) render(t *testing.T, s string) {
	t.Helper()
	if _, err := h.pipe.Render(&renderer.RenderInput{Path: h.dest, Contents: []byte(s)}); err != nil {
		t.Fatal(err)
	}
}

func TestNoStartBeforeFirstRenderThenOneReloadPerBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, true, 100*time.Millisecond, time.Second)
		synctest.Wait()
		if s, _ := h.proxy.counts(); s != 0 {
			t.Fatal("proxy started before the first render")
		}
		h.render(t, "v0")
		synctest.Wait()
		if s, r := h.proxy.counts(); s != 1 || r != 0 {
			t.Fatalf("after first render: starts=%d reloads=%d, want 1 0", s, r)
		}
		// A burst: 100 changes in one second.
		for i := range 100 {
			h.render(t, fmt.Sprintf("v%d", i+1))
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		if _, r := h.proxy.counts(); r < 1 || r > 3 {
			t.Errorf("%d reloads for a burst of 100 changes, want 1..3", r)
		}
	})
}

func TestLeadingEdgeReloadsWhenThePassEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, false, 100*time.Millisecond, time.Second)
		e := <-h.engines
		h.render(t, "v0")
		time.Sleep(time.Second)
		if _, r := h.proxy.counts(); r != 1 {
			t.Fatalf("after the first render: %d reloads, want 1", r)
		}
		// A change after a quiet period: reloaded as soon as the runner
		// says its pass is over, without waiting for the 100ms debounce.
		h.pass(t, e, "v1")
		h.wantReloads(t, 2, "at the end of the pass")
		// A change right after it is a burst: it waits for the debounce.
		time.Sleep(10 * time.Millisecond)
		h.pass(t, e, "v2")
		h.wantReloads(t, 2, "10ms after a reload, at the end of the pass")
		time.Sleep(100 * time.Millisecond)
		h.wantReloads(t, 3, "after the debounce")
	})
}

// pass renders s and ends the runner's pass, as consul-template does after
// it executed every template.
func (h *harness) pass(t *testing.T, e *fakeEngine, s string) {
	t.Helper()
	h.render(t, s)
	e.events <- struct{}{}
}

func (h *harness) wantReloads(t *testing.T, want int, when string) {
	t.Helper()
	synctest.Wait()
	if _, r := h.proxy.counts(); r != want {
		t.Fatalf("%s: %d reloads, want %d", when, r, want)
	}
}

func TestFailedReloadRollsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, false, 10*time.Millisecond, 100*time.Millisecond)
		h.render(t, "good")
		time.Sleep(time.Second)
		h.proxy.mu.Lock()
		h.proxy.verifyErr = errors.New("new workers never came")
		h.proxy.mu.Unlock()
		h.render(t, "breaks-at-reload")
		time.Sleep(time.Second)
		if b, _ := os.ReadFile(h.dest); string(b) != "good" {
			t.Fatalf("live = %q, want the rolled-back %q", b, "good")
		}
		if st := h.sup.Stats(); st.FailedReloads != 1 {
			t.Errorf("stats %+v", st)
		}
	})
}

func TestRunnerRebuiltAfterFatal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, false, 0, 0)
		e1 := <-h.engines
		e1.fatal <- errors.New("boom")
		time.Sleep(2 * time.Second)
		select {
		case <-h.engines:
		default:
			t.Fatal("runner not rebuilt")
		}
		if h.sup.Stats().Rebuilds != 1 {
			t.Errorf("rebuilds = %d", h.sup.Stats().Rebuilds)
		}
	})
}

func TestParseStdLog(t *testing.T) {
	for _, c := range []struct{ in, comp, msg string }{
		{"[WARN] (runner) watching 200 dependencies", "runner", "watching 200 dependencies"},
		{"[ERR] (view) health.service(web): connection refused", "view", "health.service(web): connection refused"},
		{"plain line", "", "plain line"},
	} {
		_, comp, msg := parseStdLog(c.in)
		if comp != c.comp || msg != c.msg {
			t.Errorf("%q -> %q %q", c.in, comp, msg)
		}
	}
}
