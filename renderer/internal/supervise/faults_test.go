package supervise

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul-template/renderer"

	"github.com/switchyard/switchyard/renderer/internal/pipeline"
	"github.com/switchyard/switchyard/renderer/internal/status"
)

// TestProxyDeathIsCountedOnce: issue 7 item 1. One death of the
// supervised proxy is one death: it is restarted with backoff and the
// loop does not spin on the exit channel that stays closed; Run gives up
// only at the MaxProxyDeaths-th death within the window.
func TestProxyDeathIsCountedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startWith(t, true, 0, 0, func(o *Options) { o.MaxProxyDeaths = 5 })
		h.render(t, "v0")
		synctest.Wait()
		h.proxy.die()
		time.Sleep(10 * time.Second)
		if s, _ := h.proxy.counts(); s != 2 {
			t.Fatalf("starts = %d after one death, want 2", s)
		}
		if p := h.proxyStatus(); p.Deaths != 1 || p.Restarts != 1 || !p.Up {
			t.Fatalf("status after one death: %+v", p)
		}
		for i := 2; i <= 4; i++ {
			h.proxy.die()
			time.Sleep(5 * time.Second)
		}
		if p := h.proxyStatus(); p.Deaths != 4 || p.Restarts != 4 {
			t.Fatalf("status after four deaths: %+v", p)
		}
		h.proxy.die()
		synctest.Wait()
		select {
		case err := <-h.done:
			if !errors.Is(err, ErrProxyDied) {
				t.Fatalf("Run = %v, want ErrProxyDied", err)
			}
			h.done <- errExpected
		default:
			t.Fatal("Run still going after the 5th death within a minute")
		}
	})
}

// TestUnaskedReloadIsRetried: issue 7 item 11. A proxy whose CLI did not
// answer the reload keeps its reload pending and gets it on the retry;
// nothing is rolled back for it.
func TestUnaskedReloadIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, false, 0, 0)
		h.render(t, "v0")
		time.Sleep(time.Second)
		h.proxy.mu.Lock()
		h.proxy.reloadErr = errors.New("master CLI: connection reset")
		h.proxy.mu.Unlock()
		h.render(t, "v1")
		synctest.Wait()
		if p := h.proxyStatus(); !p.ReloadPending || p.ReloadFailures != 0 || p.Rollbacks != 0 {
			t.Fatalf("after the unasked reload: %+v", p)
		}
		time.Sleep(retryFirst)
		synctest.Wait()
		if p := h.proxyStatus(); p.ReloadPending || p.Reloads != 2 {
			t.Fatalf("after the retry: %+v", p)
		}
		if b, _ := os.ReadFile(h.dest); string(b) != "v1" {
			t.Fatalf("live = %q", b)
		}
	})
}

// TestOnceExitsWithHeld: issue 7 item 4. `renderer once` whose render the
// stale guard holds does not exit 0: Run ends with ErrHeld, and the live
// file is kept.
func TestOnceExitsWithHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "nginx.conf")
		full := "upstream a {\n server 10.0.0.1:80;\n server 10.0.0.2:80;\n}\n"
		os.WriteFile(dest, []byte(full), 0o644)
		pipe := pipeline.New(context.Background(), pipeline.Options{MaxRemoval: 0.5, HoldDown: time.Minute},
			[]pipeline.Target{{Template: "t", Dest: dest, Proxy: "p", Backends: pipeline.NginxUpstreams}})
		eng := newFakeEngine()
		sup := New(Options{Once: true, Pipeline: pipe, Proxies: map[string]Reloader{"p": &fakeProxy{}},
			NewEngine: func() (Engine, error) { return eng, nil }})
		done := make(chan error, 1)
		go func() { done <- sup.Run(context.Background()) }()
		pipe.Render(&renderer.RenderInput{Path: dest, Contents: []byte("upstream a {\n}\n")})
		if err := <-done; !errors.Is(err, ErrHeld) {
			t.Fatalf("Run = %v, want ErrHeld", err)
		}
		if b, _ := os.ReadFile(dest); string(b) != full {
			t.Fatal("live file changed")
		}
	})
}

// TestHeldRenderAppliedByTheLoop: the loop asks Consul when the hold is
// due, and the pipeline applies it; then the proxy reloads.
func TestHeldRenderAppliedByTheLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "nginx.conf")
		rec := status.NewRecorder(nil)
		rec.AddTemplate("t", dest, "p")
		pipe := pipeline.New(context.Background(), pipeline.Options{MaxRemoval: 0.5, HoldDown: time.Minute, Status: rec},
			[]pipeline.Target{{Template: "t", Dest: dest, Proxy: "p", Backends: pipeline.NginxUpstreams}})
		fp := &fakeProxy{}
		c := &fakeConsul{}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		sup := New(Options{Pipeline: pipe, Proxies: map[string]Reloader{"p": fp}, Status: rec, ConsulUp: c.up,
			NewEngine: func() (Engine, error) { return newFakeEngine(), nil }})
		go sup.Run(ctx)
		empty := "upstream a {\n}\n"
		pipe.Render(&renderer.RenderInput{Path: dest, Contents: []byte("upstream a {\n server 10.0.0.1:80;\n}\n")})
		time.Sleep(time.Second)
		pipe.Render(&renderer.RenderInput{Path: dest, Contents: []byte(empty)})
		time.Sleep(59 * time.Second)
		if b, _ := os.ReadFile(dest); string(b) == empty {
			t.Fatal("applied before the hold-down")
		}
		time.Sleep(2 * time.Second)
		if b, _ := os.ReadFile(dest); string(b) != empty {
			t.Fatal("held render not applied after the hold-down")
		}
		if _, r := fp.counts(); r != 2 || c.count() != 1 {
			t.Fatalf("reloads = %d, probes = %d", r, c.count())
		}
		cancel()
		synctest.Wait()
	})
}

// TestBrokenTemplateEditStaysVisible: a SIGHUP whose templates do not
// parse keeps the running runner, and the failure stays on /status (not
// ready) through later renders of the old template, until a read that
// parses.
func TestBrokenTemplateEditStaysVisible(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reread := make(chan struct{}, 1)
		broken := errors.New("template t: line 3: unexpected EOF")
		var parseErr error
		h := startWith(t, false, 0, 0, func(o *Options) {
			o.Reread = reread
			o.CheckTemplates = func() map[string]error {
				if parseErr != nil {
					return map[string]error{o.Dests[0]: parseErr}
				}
				return nil
			}
		})
		<-h.engines
		h.render(t, "v0")
		synctest.Wait()
		parseErr = broken
		reread <- struct{}{}
		synctest.Wait()
		h.noEngine(t, "after a SIGHUP with a broken template")
		h.render(t, "v1") // the old template still renders
		synctest.Wait()
		if ok, _ := h.rec.Snapshot().Ready(); ok || h.tmplStatus().ParseError == "" {
			t.Fatalf("broken template not visible after a render: %+v", h.tmplStatus())
		}
		parseErr = nil
		reread <- struct{}{}
		synctest.Wait()
		select {
		case <-h.engines:
		default:
			t.Fatal("templates not read again after they parse")
		}
		if ok, reason := h.rec.Snapshot().Ready(); !ok {
			t.Fatalf("not ready after the fix: %s", reason)
		}
	})
}

// TestLeaderCheckNeverBlocksRenders: issue 7 item 11. The stale guard's
// leader check runs off the write path with a deadline: a Consul that
// hangs on it delays only the held render, never another render, and the
// check gives up at probeTimeout.
func TestLeaderCheckNeverBlocksRenders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		held, other := filepath.Join(dir, "a.conf"), filepath.Join(dir, "b.conf")
		pipe := pipeline.New(context.Background(), pipeline.Options{MaxRemoval: 0.5, HoldDown: time.Second}, []pipeline.Target{
			{Template: "a", Dest: held, Proxy: "p", Backends: pipeline.NginxUpstreams},
			{Template: "b", Dest: other, Proxy: "q"},
		})
		var asked atomic.Int64
		hang := func(ctx context.Context) error {
			start := time.Now()
			<-ctx.Done()
			asked.Store(int64(time.Since(start)))
			return ctx.Err()
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		sup := New(Options{Pipeline: pipe, Proxies: map[string]Reloader{"p": &fakeProxy{}, "q": &fakeProxy{}},
			ConsulUp: hang, NewEngine: func() (Engine, error) { return newFakeEngine(), nil }})
		go sup.Run(ctx)
		render := func(dest, s string) {
			if _, err := pipe.Render(&renderer.RenderInput{Path: dest, Contents: []byte(s)}); err != nil {
				t.Fatal(err)
			}
		}
		render(held, "upstream a {\n server 10.0.0.1:80;\n}\n")
		render(other, "v1")
		render(held, "upstream a {\n}\n")
		time.Sleep(1500 * time.Millisecond) // the hold is due; Consul hangs
		start := time.Now()
		render(other, "v2")
		if took := time.Since(start); took != 0 {
			t.Fatalf("a render waited %s for the leader check", took)
		}
		time.Sleep(probeTimeout)
		if got := time.Duration(asked.Load()); got != probeTimeout {
			t.Fatalf("the leader check ran %s, want its %s deadline", got, probeTimeout)
		}
		if b, _ := os.ReadFile(held); string(b) == "upstream a {\n}\n" {
			t.Fatal("applied without Consul's answer")
		}
		cancel()
		synctest.Wait()
	})
}
