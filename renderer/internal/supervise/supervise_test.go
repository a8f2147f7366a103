package supervise

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul-template/renderer"

	"github.com/switchyard/switchyard/renderer/internal/pipeline"
	"github.com/switchyard/switchyard/renderer/internal/policy"
	"github.com/switchyard/switchyard/renderer/internal/status"
)

type fakeEngine struct {
	stop      chan struct{}
	once      sync.Once
	fatal     chan error
	serverErr chan error    // buffered 1, as the runner's ServerErrCh
	events    chan struct{} // a test sends here when its "pass" is over
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{stop: make(chan struct{}), fatal: make(chan error),
		serverErr: make(chan error, 1), events: make(chan struct{}, 1)}
}
func (e *fakeEngine) Start()                           { <-e.stop }
func (e *fakeEngine) Stop()                            { e.once.Do(func() { close(e.stop) }) }
func (e *fakeEngine) Fatal() <-chan error              { return e.fatal }
func (e *fakeEngine) ServerErr() <-chan error          { return e.serverErr }
func (e *fakeEngine) Events() <-chan struct{}          { return e.events }
func (e *fakeEngine) TemplateErrors() map[string]error { return nil }

type fakeProxy struct {
	mu              sync.Mutex
	starts, reloads int
	reloadErr       error // the next Reload fails (could not ask)
	verifyErr       error
	stickyErr       bool // verifyErr fails every Verify, not just the next
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
	defer f.mu.Unlock()
	if err := f.reloadErr; err != nil {
		f.reloadErr = nil
		return err
	}
	f.reloads++
	return nil
}
func (f *fakeProxy) Supervised() bool { return f.supervised }

// die ends the supervised proxy's process, as kill -9 does.
func (f *fakeProxy) die() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.exited)
}
func (f *fakeProxy) Verify(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.verifyErr
	if !f.stickyErr {
		f.verifyErr = nil
	}
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
	rec     *status.Recorder
	pipe    *pipeline.Pipeline
	proxy   *fakeProxy
	sup     *Supervisor
	engines chan *fakeEngine
	cancel  context.CancelFunc
	done    chan error
}

func start(t *testing.T, supervised bool, wmin, wmax time.Duration) *harness {
	t.Helper()
	return startWith(t, supervised, wmin, wmax, nil)
}

// startWith is start with a last say on the Options.
func startWith(t *testing.T, supervised bool, wmin, wmax time.Duration, opt func(*Options)) *harness {
	t.Helper()
	h := &harness{dest: filepath.Join(t.TempDir(), "proxy.conf"), proxy: &fakeProxy{supervised: supervised},
		engines: make(chan *fakeEngine, 10), done: make(chan error, 1)}
	h.rec = status.NewRecorder(nil)
	h.rec.AddTemplate("t", h.dest, "p")
	h.pipe = pipeline.New(context.Background(), pipeline.Options{Status: h.rec}, []pipeline.Target{{Template: "t", Dest: h.dest, Proxy: "p"}})
	o := Options{
		Dests:     []string{h.dest},
		Status:    h.rec,
		NewEngine: func() (Engine, error) { e := newFakeEngine(); h.engines <- e; return e, nil },
		Pipeline:  h.pipe,
		Proxies:   map[string]Reloader{"p": h.proxy},
		WaitMin:   wmin, WaitMax: wmax,
	}
	if opt != nil {
		opt(&o)
	}
	h.sup = New(o)
	var ctx context.Context
	ctx, h.cancel = context.WithCancel(context.Background())
	go func() { h.done <- h.sup.Run(ctx) }()
	t.Cleanup(func() {
		h.cancel()
		if err := <-h.done; err != nil && !errors.Is(err, errExpected) {
			t.Errorf("Run: %v", err)
		}
	})
	return h
}

// errExpected is what a test that ends Run itself leaves in h.done.
var errExpected = errors.New("run already ended")

func (h *harness) proxyStatus() status.Proxy   { return h.rec.Snapshot().Proxies[0] }
func (h *harness) tmplStatus() status.Template { return h.rec.Snapshot().Templates[0] }
func (h *harness) runner() status.Runner       { return h.rec.Snapshot().Runner }

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
		// The rollback's reload took: the proxy serves "good", verified.
		if ps := h.proxyStatus(); ps.ReloadFailures != 1 || ps.Rollbacks != 1 || ps.Reloads != 2 ||
			ps.LastError != "" || ps.LastReload.IsZero() {
			t.Errorf("proxy status %+v", ps)
		}
		if st := h.tmplStatus(); st.Rejected != 1 || st.LastErrorKind != status.KindRollback || st.Swaps != 2 {
			t.Errorf("template status %+v", st)
		}
	})
}

func TestFailedRollbackReloadIsReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, false, 10*time.Millisecond, 100*time.Millisecond)
		h.render(t, "good")
		time.Sleep(time.Second)
		h.proxy.mu.Lock()
		h.proxy.verifyErr, h.proxy.stickyErr = errors.New("proxy wedged"), true
		h.proxy.mu.Unlock()
		h.render(t, "breaks-at-reload")
		time.Sleep(time.Second)
		ps := h.proxyStatus()
		// The reload failed, and so did the one after the rollback.
		if ps.ReloadFailures != 2 || ps.Rollbacks != 1 ||
			!strings.Contains(ps.LastError, "reload after rollback: proxy wedged") {
			t.Errorf("proxy stats %+v", ps)
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
		if r := h.runner(); r.Rebuilds != 1 {
			t.Errorf("rebuilds = %d", r.Rebuilds)
		}
	})
}

// fakeConsul is Options.ConsulUp: down until the test brings it back.
type fakeConsul struct {
	mu     sync.Mutex
	down   bool
	probes int
}

func (c *fakeConsul) up(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.probes++
	if c.down {
		return errors.New("connection refused")
	}
	return nil
}

func (c *fakeConsul) set(down bool) {
	c.mu.Lock()
	c.down = down
	c.mu.Unlock()
}

func (c *fakeConsul) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.probes
}

// noEngine fails if a runner was built.
func (h *harness) noEngine(t *testing.T, when string) {
	t.Helper()
	synctest.Wait()
	select {
	case <-h.engines:
		t.Fatalf("%s: runner rebuilt", when)
	default:
	}
}

// hadData makes the engine's runner finish a pass: its watches now hold
// Consul indexes.
func hadData(e *fakeEngine) {
	e.events <- struct{}{}
	synctest.Wait()
}

// After Consul errors, the runner is rebuilt once Consul answers again,
// not before, and not again for the new runner's errors while Consul is
// coming back.
func TestRunnerRebuiltWhenConsulAnswersAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &fakeConsul{down: true}
		h := startWith(t, false, 0, 0, func(o *Options) { o.ConsulUp = c.up })
		e1 := <-h.engines
		hadData(e1)
		e1.serverErr <- errors.New("connection refused")
		time.Sleep(time.Minute)
		h.noEngine(t, "while Consul is down")
		// Backed off to one probe every 2 s: ~30 in a minute, not a spin.
		if n := c.count(); n < 20 || n > 40 {
			t.Errorf("%d probes in a minute of outage, want about 30", n)
		}
		c.set(false)
		back := time.Now()
		var e2 *fakeEngine
		select {
		case e2 = <-h.engines:
		case <-time.After(10 * time.Second):
			t.Fatal("runner not rebuilt after Consul came back")
		}
		if took := time.Since(back); took > 2*time.Second {
			t.Errorf("rebuilt %s after Consul came back, want within 2s (the probe interval)", took)
		}
		if st := h.runner(); st.OutageRebuilds != 1 || st.Rebuilds != 0 || st.ConsulErrors != 1 {
			t.Errorf("stats %+v, want one outage rebuild", st)
		}
		// The new runner's watches are at index 0: its own errors (Consul
		// still settling) are no reason to rebuild it.
		e2.serverErr <- errors.New("no cluster leader")
		time.Sleep(time.Minute)
		h.noEngine(t, "on an error of a runner that never had data")
	})
}

// A runner that never rendered has every watch at index 0: rebuilding it
// would gain nothing.
func TestNoOutageRebuildBeforeData(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &fakeConsul{}
		h := startWith(t, false, 0, 0, func(o *Options) { o.ConsulUp = c.up })
		e1 := <-h.engines
		e1.serverErr <- errors.New("connection refused")
		time.Sleep(time.Minute)
		h.noEngine(t, "after an error before any data")
		if n := c.count(); n != 0 {
			t.Errorf("%d probes, want none", n)
		}
	})
}

// Errors that keep coming while Consul answers (a query it always refuses)
// rebuild with a doubling gap, capped: never a loop. A quiet minute starts
// the gap over.
func TestOutageRebuildsBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &fakeConsul{}
		h := startWith(t, false, 0, 0, func(o *Options) { o.ConsulUp = c.up })
		var at []time.Time
		e := <-h.engines
		begin := time.Now()
		for time.Since(begin) < 30*time.Minute {
			hadData(e)
			e.serverErr <- errors.New("403 permission denied")
			e = <-h.engines
			at = append(at, time.Now())
		}
		// 0, 2, 6, 14, 30, 62, 126, 254, then every 5 minutes.
		if len(at) < 10 || len(at) > 14 {
			t.Errorf("%d rebuilds in 30 minutes of errors, want about 12", len(at))
		}
		for i := 2; i < len(at); i++ {
			gap, prev := at[i].Sub(at[i-1]), at[i-1].Sub(at[i-2])
			if gap < prev || gap > policy.OutageGapCap+policy.ProbeMax {
				t.Errorf("rebuild %d: gap %s after %s, want non-decreasing and at most %s", i, gap, prev, policy.OutageGapCap)
			}
		}
		// Quiet for two minutes, then an outage: rebuilt as soon as
		// Consul answers, the gap started over.
		hadData(e)
		time.Sleep(2 * time.Minute)
		last := time.Now()
		e.serverErr <- errors.New("connection refused")
		select {
		case <-h.engines:
		case <-time.After(10 * time.Second):
			t.Fatal("not rebuilt after a quiet period")
		}
		if took := time.Since(last); took > time.Second {
			t.Errorf("rebuilt %s after the error, want at once (gap reset)", took)
		}
	})
}

// Without a probe the runner is rebuilt right at the first error of a
// runner that had data; the new runner's own retries then find Consul at
// index 0.
func TestOutageRebuildWithoutProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, false, 0, 0)
		e1 := <-h.engines
		hadData(e1)
		e1.serverErr <- errors.New("connection refused")
		synctest.Wait()
		var e2 *fakeEngine
		select {
		case e2 = <-h.engines:
		default:
			t.Fatal("runner not rebuilt at the first error")
		}
		// Its errors, until it had data, change nothing.
		for range 10 {
			e2.serverErr <- errors.New("connection refused")
			time.Sleep(5 * time.Second)
		}
		h.noEngine(t, "on errors of the new runner")
		if st := h.runner(); st.OutageRebuilds != 1 {
			t.Errorf("stats %+v", st)
		}
	})
}
