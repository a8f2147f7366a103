package main

// The rig of the end-to-end runtime-apply tests (runtime_caddy_test.go,
// runtime_haproxy_test.go): the real renderer, run in-process against a
// real Consul, supervising a real proxy with a shipped template. It is
// written once, here, so that each proxy's file says only what that
// proxy needs and each test reads as its scenario, and so that how a
// renderer under test is run (its flags, its waits, issue 9's load) is
// changed in one place for every proxy.

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// proxyRig is one renderer supervising a proxy with a shipped template.
type proxyRig struct {
	kind   string   // the proxy's entry in /status
	listen string   // where the proxy serves the template's routes
	status string   // the renderer's --status-addr
	dest   string   // the file the renderer writes
	args   []string // the renderer's flags, from withRenderer
}

// localAddrs is n distinct free 127.0.0.1 addresses: a proxy's listener,
// its admin API and the renderer's /status must not collide.
func localAddrs(t *testing.T, n int) []string {
	t.Helper()
	ports, err := testenv.PickPorts(n)
	if err != nil {
		t.Fatal(err)
	}
	addrs := make([]string, n)
	for i, p := range ports {
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	return addrs
}

// shippedTemplate is the --template spec rendering the template name of
// the repository's templates/ to dest: the tests prove what ships.
func shippedTemplate(name, dest string) string {
	tmpl, _ := filepath.Abs(filepath.Join("../templates", name))
	return tmpl + ":" + dest
}

// withRenderer gives the rig its renderer's flags: the ones every rig
// shares, then flags (the proxy's own, then the test's). The shared ones
// debounce renders for 10ms to 100ms and allow reloads back to back, so
// that a test waits well under a second for each change. The shipped
// templates listen on SWITCHYARD_LISTEN.
func (r proxyRig) withRenderer(t *testing.T, consulAddr, template string, flags ...string) proxyRig {
	t.Setenv("SWITCHYARD_LISTEN", r.listen)
	r.args = append([]string{"--consul-addr", consulAddr, "--template", template, "--proxy-mode", "supervise",
		"--wait", "10ms:100ms", "--min-reload-gap", "0s", "--status-addr", r.status}, flags...)
	return r
}

// now is the proxy's /status entry as it is.
func (r proxyRig) now(t testing.TB) runtimeProxyStatus {
	t.Helper()
	return proxyStatus(t, r.status, r.kind)
}

// settled waits until the proxy is up with every render loaded.
func (r proxyRig) settled(t *testing.T) runtimeProxyStatus {
	t.Helper()
	return settledStatus(t, r.status, r.kind)
}

// rigRenderer is the rig's renderer run in-process. Unlike daemon, which
// runs until the test ends, a test can stop it and then start another on
// the same files, as a restarted renderer would find them.
type rigRenderer struct {
	logs *syncBuffer
	stop func() // cancels the renderer and waits for it; runs once
}

// start runs the rig's renderer until stop or the end of the test, and
// logs what it logged if the test failed.
func (r proxyRig) start(t *testing.T) *rigRenderer {
	t.Helper()
	rr := &rigRenderer{logs: &syncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan error, 1)
	go func() {
		exited <- newApp(io.Discard, rr.logs).RunContext(ctx, append([]string{"renderer"}, r.args...))
	}()
	rr.stop = sync.OnceFunc(func() {
		cancel()
		waitRendererExit(t, exited)
	})
	t.Cleanup(func() {
		rr.stop()
		if t.Failed() {
			t.Logf("renderer log:\n%s", rr.logs.String())
		}
	})
	return rr
}

// waitRendererExit fails the test if the renderer, once cancelled, exits
// with an error or hangs: stopping cleanly is part of what is tested.
func waitRendererExit(t *testing.T, exited <-chan error) {
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("renderer exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("renderer did not stop within 30s")
	}
}

// Issue 9's measure, the same for every proxy: two instances of "web"
// stay registered (web-a, web-b) while two more (web-c, web-d) come and
// go, one change every 250ms, under 32 keep-alive clients. Only the
// proxy's rig and what a test checks of it differ.

// runtimeApplyModes is the --runtime-apply values a load test runs:
// always true, the behaviour under test; false too when compare, to
// measure what runtime apply saves (slower, and logged, not checked).
func runtimeApplyModes(compare bool) []bool {
	if compare {
		return []bool{true, false}
	}
	return []bool{true}
}

// runtimeApplyFlag is the renderer flag of one mode.
func runtimeApplyFlag(runtimeApply bool) string {
	return fmt.Sprintf("--runtime-apply=%t", runtimeApply)
}

// forEachMode runs f as a subtest per mode, named after it.
func forEachMode(t *testing.T, modes []bool, f func(t *testing.T, runtimeApply bool)) {
	for _, runtimeApply := range modes {
		t.Run(fmt.Sprintf("runtime-apply=%t", runtimeApply), func(t *testing.T) { f(t, runtimeApply) })
	}
}

// registerWebPool starts the four backends of "web", registers web-a and
// web-b, and returns their ports by id. The modes share one Consul, so
// all four are deregistered when the mode ends.
func registerWebPool(t *testing.T, consul *testenv.Consul) map[string]int {
	t.Helper()
	ports := map[string]int{}
	for _, id := range []string{"web-a", "web-b", "web-c", "web-d"} {
		_, ports[id] = backend(t, id)
	}
	register(t, consul.Client, "web", "web-a", ports["web-a"])
	register(t, consul.Client, "web", "web-b", ports["web-b"])
	t.Cleanup(func() {
		for id := range ports {
			_ = consul.Client.Agent().ServiceDeregister(id)
		}
	})
	return ports
}

// startWebLoad starts the 32 keep-alive clients on web.localhost; a
// failed step must not leave them running, so the test's end stops them.
func startWebLoad(t *testing.T, listen string) *testenv.KeepAliveLoad {
	load := testenv.StartKeepAliveLoad(listen, "web.localhost", 32)
	t.Cleanup(func() { load.Stop() })
	return load
}

// churnWeb makes changes to "web", one every 250ms: web-c in, web-c out,
// web-d in, web-d out, and again. Each is membership only, which runtime
// apply serves without a reload. after, if not nil, runs after each.
func churnWeb(t *testing.T, consul *testenv.Consul, ports map[string]int, changes int, after func()) {
	t.Helper()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for i := range changes {
		<-tick.C
		id := []string{"web-c", "web-d"}[(i/2)%2]
		if i%2 == 0 {
			register(t, consul.Client, "web", id, ports[id])
		} else if err := consul.Client.Agent().ServiceDeregister(id); err != nil {
			t.Error(err)
		}
		if after != nil {
			after()
		}
	}
}

// churnFinal is who serves "web" after changes of churnWeb: web-a and
// web-b, and web-c or web-d after an odd number.
func churnFinal(changes int) []string {
	final := []string{"web-a", "web-b"}
	if changes%2 == 1 {
		final = append(final, []string{"web-c", "web-d"}[((changes-1)/2)%2])
	}
	return final
}

// loadResult is what a load run measured: the clients' requests and
// failures, and the reloads and runtime applies the changes caused.
type loadResult struct {
	changes, requests, failed, reloads, applies int
	reasons                                     map[string]int
}

func (r loadResult) String() string {
	return fmt.Sprintf("%d changes, %d requests, %d failed %v; reloads %d, runtime applies %d",
		r.changes, r.requests, r.failed, r.reasons, r.reloads, r.applies)
}

// measure waits until the proxy has settled after the load stopped, and
// counts the reloads and runtime applies since base.
func (r proxyRig) measure(t *testing.T, load testenv.KeepAliveResult, changes int, base runtimeProxyStatus) loadResult {
	t.Helper()
	after := r.settled(t)
	return loadResult{changes: changes, requests: load.Requests, failed: load.Failed, reasons: load.Reasons,
		reloads: int(after.Reloads - base.Reloads), applies: int(after.RuntimeApplies - base.RuntimeApplies)}
}
