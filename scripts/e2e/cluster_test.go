package e2e

// Multi-host end to end (issue 12): a real Consul cluster of three servers
// and four client agents, each on its own loopback address; two simulated
// Docker hosts, each a Docker Engine of the test's own with its own
// registrar; a proxy host running a renderer with nginx and one with
// HAProxy (the shipped templates, proxies supervised), and a spare proxy
// host. Every scenario is asserted through real requests, counted per
// backend, and measured against a documented bound; the measurements are
// logged as "RESULT | scenario | bound | measured |" lines and as a table
// at the end (the README's table comes from them).
//
//	go test -race -count=1 -run Cluster ./scripts/e2e/ -v

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"
	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// The bounds each scenario is held to.
const (
	// scaleBound: a container started or stopped on either host is in, or
	// out of, both proxies: registrar (Docker event) -> agent -> catalog
	// -> blocking query -> render (debounce at most 500ms) -> validate ->
	// swap -> reload.
	scaleBound = 10 * time.Second
	// renderBound: from the catalog change to the proxies applying it
	// (the render part of scaleBound).
	renderBound = 3 * time.Second
	// agentSyncBound: a service registered with a client agent while the
	// cluster has no leader reaches the catalog within this. It is
	// Consul's, not ours: the agent's sync fails without a leader; the
	// new leader's "new-leader" event asks every agent for a full sync
	// (staggered up to 3 s), and when that sync too comes before the
	// leader takes writes, the agent retries it after 15 s plus a stagger
	// of up to 15 s (agent/ae: retryFailInterval). Nothing a client of
	// the agent's HTTP API can do brings that retry forward.
	agentSyncBound = 35 * time.Second
	// failoverBound: issue 12 wants a renderer started on another host
	// serving within 10 s.
	failoverBound = 10 * time.Second
	// returnBound: a lost host restarted (dockerd, agent, registrar) is
	// served again within this, counted from its Consul agent's start
	// (dockerd's own restart, restoring its containers, is measured, not
	// bounded: it takes tens of seconds on a busy machine).
	returnBound = 30 * time.Second
	// clusterMembers is the cluster's size: 3 servers and 4 clients.
	clusterMembers = 7
)

// hostLossBound: a lost host's instances leave both proxies within
// Consul's failure detection (gossip; the leader then marks the node's
// serfHealth critical, and the shipped templates route passing instances
// only) plus the render.
func hostLossBound() time.Duration {
	return testenv.ClusterFailureDetection(clusterMembers) + renderBound
}

func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the multi-host cluster test runs for minutes")
	}
	start := time.Now()
	e := startClusterEnv(t)
	t.Run("1_BothHostsServeAndScale", func(t *testing.T) { clusterScale(t, e) })
	t.Run("2_HostLost", func(t *testing.T) { clusterHostLost(t, e) })
	t.Run("3_LeaderKilled", func(t *testing.T) { clusterLeaderKilled(t, e) })
	t.Run("4_ProxyHostLost", func(t *testing.T) { clusterProxyHostLost(t, e) })
	t.Run("5_RegistrarUpgrade", func(t *testing.T) { clusterRegistrarUpgrade(t, e) })
	t.Logf("cluster test: %s from start to the last scenario", ms(time.Since(start)))
}

// Scenario 1: containers on both hosts all receive traffic through nginx
// and through HAProxy; scaling up and down on either host is reflected.
func clusterScale(t *testing.T, e *clusterEnv) {
	total := 0
	var counts []string
	for _, p := range e.edge.proxies {
		for _, svc := range e.svcs {
			want := names(e.expected(svc))
			seen := countBackends(p, svc, 10*len(want))
			counts = append(counts, fmt.Sprintf("%s %s %v", p.kind, svc, seen))
			if seen[""] > 0 {
				t.Errorf("%s %s: %d of %d requests failed", p.kind, svc, seen[""], 10*len(want))
			}
			for _, w := range want {
				if seen[w] == 0 {
					t.Errorf("%s %s: %s got no request of %d: %v", p.kind, svc, w, 10*len(want), seen)
				}
			}
			for k := range seen {
				if k != "" && !slices.Contains(want, k) {
					t.Errorf("%s %s: answered by %s, not one of %v", p.kind, svc, k, want)
				}
			}
			total += len(want)
		}
	}
	t.Logf("answers per backend: %s", strings.Join(counts, "; "))

	// Up is timed from the container running (docker's own start time,
	// seconds on a busy machine, is not ours), down from `docker stop`:
	// the registrar drains the instance at the SIGTERM.
	var ups, downs []time.Duration
	for _, h := range []*simHost{e.hosts[1], e.hosts[0]} {
		c := e.run(t, h, "web")
		t0 := time.Now()
		e.waitServed(t, scaleBound+20*time.Second)
		ups = append(ups, time.Since(t0))
		t.Logf("scale up on %s: %s served by both proxies %s after it ran", h.name, c.name, ms(ups[len(ups)-1]))

		t0 = time.Now()
		e.stop(t, c)
		e.waitServed(t, scaleBound+20*time.Second)
		downs = append(downs, time.Since(t0))
		t.Logf("scale down on %s: %s out of both proxies %s after docker stop began", h.name, c.name, ms(downs[len(downs)-1]))
	}
	for i, d := range append(slices.Clone(ups), downs...) {
		if d > scaleBound {
			t.Errorf("scale step %d reflected after %s, bound %s", i, ms(d), scaleBound)
		}
	}
	e.record("1. containers of both hosts serve through nginx and HAProxy; scale up/down on either host",
		fmt.Sprintf("every container answers; a scale step is in both proxies within %s", scaleBound),
		fmt.Sprintf("%d containers (5 on host-a, 3 on host-b) all answered through both; scale up %s / %s, scale down %s / %s (host-b / host-a)",
			total/2, ms(ups[0]), ms(ups[1]), ms(downs[0]), ms(downs[1])))
}

// Scenario 2: a whole host lost, then back.
func clusterHostLost(t *testing.T, e *clusterEnv) {
	b := e.hosts[1]
	bound := hostLossBound()
	isB := func(name string) bool { return strings.HasPrefix(name, b.short+"-") }
	var bAddrs []string
	for _, c := range b.ctrs {
		bAddrs = append(bAddrs, c.addr())
	}

	load := startClusterLoad(t, e.edge.proxies, e.svcs, 90*time.Second)
	testenv.Eventually(t, 20*time.Second, func() error {
		seen := map[string]int{}
		for _, h := range load.snapshot() {
			if isB(h.backend) {
				seen[h.proxy]++
			}
		}
		if seen["nginx"] < 5 || seen["haproxy"] < 5 {
			return fmt.Errorf("the load has not reached host-b's containers 5 times through each proxy yet: %v", seen)
		}
		return nil
	})

	tKill := time.Now()
	b.kill()
	t.Logf("host-b lost: registrar, Consul agent, dockerd and containerd killed -9 in %s; its %d containers still run", ms(time.Since(tKill)), len(b.ctrs))

	server := e.consul.Servers[0].Client
	var serfAt time.Duration
	goneAt := map[string]time.Duration{}
	testenv.Eventually(t, bound+20*time.Second, func() error {
		if serfAt == 0 {
			checks, _, err := server.Health().Node(b.name, nil)
			if err == nil {
				for _, ch := range checks {
					if ch.CheckID == "serfHealth" && ch.Status == api.HealthCritical {
						serfAt = time.Since(tKill)
					}
				}
			}
		}
		for _, p := range e.edge.proxies {
			if _, ok := goneAt[p.kind]; ok {
				continue
			}
			conf, err := os.ReadFile(p.conf)
			if err != nil {
				return err
			}
			listed := false
			for _, addrs := range proxyServers(p.kind, conf) {
				for _, a := range addrs {
					listed = listed || slices.Contains(bAddrs, a)
				}
			}
			if !listed {
				goneAt[p.kind] = time.Since(tKill)
			}
		}
		if serfAt == 0 || len(goneAt) < len(e.edge.proxies) {
			return fmt.Errorf("host-b: serfHealth critical after %s, out of the live files: %v", serfAt, goneAt)
		}
		return nil
	})
	// Enough requests after the bound to show none reaches host-b then.
	cutoff := tKill.Add(bound)
	testenv.Eventually(t, bound+30*time.Second, func() error {
		after := map[string]int{}
		for _, h := range load.snapshot() {
			if h.at.After(cutoff) && h.err == "" {
				after[h.proxy]++
			}
		}
		if after["nginx"] < 100 || after["haproxy"] < 100 {
			return fmt.Errorf("answers after the bound: %v, want 100 per proxy", after)
		}
		return nil
	})
	hits := load.end()
	lastB := map[string]time.Duration{}
	before, afterB, after := map[string]int{}, map[string]int{}, map[string]int{}
	var late []string
	for _, h := range hits {
		if !isB(h.backend) {
			if h.at.After(cutoff) {
				after[h.proxy]++
			}
			continue
		}
		if h.at.Before(tKill) {
			before[h.proxy]++
		} else if d := h.at.Sub(tKill); d > lastB[h.proxy] {
			lastB[h.proxy] = d
		}
		if h.at.After(cutoff) {
			afterB[h.proxy]++
			late = append(late, fmt.Sprintf("%s %s by %s at +%s", h.proxy, h.svc, h.backend, ms(h.at.Sub(tKill))))
		}
	}
	sums := load.stats(hits)
	t.Logf("host loss: serfHealth critical after %s; out of the live files after %v; last answer from host-b after %v; "+
		"answers from host-b before the kill %v, after the bound (%s) %v; %s",
		ms(serfAt), goneAt, lastB, before, ms(bound), afterB, sums)
	for _, p := range e.edge.proxies {
		if afterB[p.kind] > 0 {
			t.Errorf("%s: %d requests reached host-b's containers after the bound (%s after the kill): %v",
				p.kind, afterB[p.kind], ms(bound), late)
		}
		if goneAt[p.kind] > bound {
			t.Errorf("%s: host-b's instances left the live file %s after the kill, bound %s", p.kind, ms(goneAt[p.kind]), ms(bound))
		}
	}
	if n := sums.bad(); n > 0 {
		t.Errorf("%d requests failed or were misrouted while host-b was lost (its containers still ran); first: %s", n, sums.first)
	}

	// The host comes back as a rebooted one does: its engine (which
	// restarts its containers: restart policy always; they may get other
	// addresses), its Consul agent (same node, same data dir: it brings the
	// registrations it had back), then its registrar. Its containers must
	// return, each once.
	tBack := time.Now()
	load = startClusterLoad(t, e.edge.proxies, e.svcs, 180*time.Second)
	if err := b.engine.Start(); err != nil {
		t.Fatal(err)
	}
	engineAt := time.Since(tBack)
	var moved []string
	testenv.Eventually(t, 60*time.Second, func() error {
		for _, c := range b.ctrs {
			in, err := b.engine.Client.InspectContainerWithOptions(docker.InspectContainerOptions{ID: c.id})
			if err != nil {
				return err
			}
			nw, ok := in.NetworkSettings.Networks[b.network]
			if !in.State.Running || !ok || nw.IPAddress == "" {
				return fmt.Errorf("%s not running again yet (%s)", c.name, in.State.String())
			}
			if nw.IPAddress != c.ip {
				moved = append(moved, fmt.Sprintf("%s %s -> %s", c.name, c.ip, nw.IPAddress))
				c.ip = nw.IPAddress
			}
		}
		return nil
	})
	ctrsAt := time.Since(tBack)
	tAgent := time.Now()
	if err := b.agent.Start(); err != nil {
		t.Fatal(err)
	}
	if err := b.agent.WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	agentAt := time.Since(tAgent)
	e.startRegistrar(t, b)
	b.down = false
	e.waitServed(t, returnBound+10*time.Second)
	backAt := time.Since(tAgent)
	testenv.Eventually(t, 10*time.Second, e.catalogCheck)
	hits = load.end()
	sums = load.stats(hits)
	t.Logf("host-b back: engine answering %s and its containers running %s after its start (moved: %v); agent ready %s and every container served again %s after the agent's start; %s",
		ms(engineAt), ms(ctrsAt), moved, ms(agentAt), ms(backAt), sums)
	if backAt > returnBound {
		t.Errorf("host-b's containers were served again %s after its agent started, bound %s", ms(backAt), returnBound)
	}
	if n := sums.failed["nginx"] + sums.failed["haproxy"]; n > 0 {
		t.Errorf("%d requests failed while host-b came back; first: %s", n, sums.first)
	}
	misroutes := ""
	if n := sums.misrouted["nginx"] + sums.misrouted["haproxy"]; n > 0 {
		// When the node rejoins, the leader marks its serfHealth passing,
		// and the catalog serves the registrations the node had before it
		// was lost, at the addresses its containers had then, until the
		// agent and the registrar sync the new ones: a container that took
		// another's address on the restart answers for it meanwhile. Not
		// asserted: it depends on the addresses the engine hands out, and
		// no registrar change alone closes it (see the README).
		var first, last time.Duration = -1, 0
		for _, h := range hits {
			if h.err == "" && svcOf(h.backend) != h.svc {
				d := h.at.Sub(tAgent)
				if first < 0 {
					first = d
				}
				last = d
			}
		}
		misroutes = fmt.Sprintf("; %d requests answered by another service's container from %s to %s after the agent's start (addresses moved on the restart)", n, ms(first), ms(last))
		t.Logf("WARNING: %d requests answered by another service's container while host-b came back, from %s to %s after its agent started (addresses moved: %v); first: %s",
			n, ms(first), ms(last), moved, sums.first)
	}
	e.record("2. host-b lost (dockerd, containerd, Consul agent, registrar kill -9), then back",
		fmt.Sprintf("out of both proxies within %s (gossip failure detection %s + render %s); none answers after; back within %s of its agent, no duplicate",
			ms(bound), ms(testenv.ClusterFailureDetection(clusterMembers)), renderBound, returnBound),
		fmt.Sprintf("serfHealth critical %s; out of nginx %s, HAProxy %s; last answer from host-b %s / %s; 0 answers from it after the bound (of %d / %d); "+
			"0 failed requests; back: dockerd %s (its containers running %s), then served %s after its agent started; catalog and configs without duplicates%s",
			ms(serfAt), ms(goneAt["nginx"]), ms(goneAt["haproxy"]), ms(lastB["nginx"]), ms(lastB["haproxy"]),
			after["nginx"], after["haproxy"], ms(engineAt), ms(ctrsAt), ms(backAt), misroutes))
}

// Scenario 3: the Consul leader killed.
func clusterLeaderKilled(t *testing.T, e *clusterEnv) {
	leader, err := e.consul.Leader()
	if err != nil {
		t.Fatal(err)
	}
	var watches []*liveWatch
	for _, p := range e.edge.proxies {
		watches = append(watches, watchLive(t, p.conf, 5000, everyBlockServed(p.kind, e.svcs)))
	}
	load := startClusterLoad(t, e.edge.proxies, e.svcs, 120*time.Second)
	testenv.Eventually(t, 10*time.Second, func() error {
		if ok := load.stats(load.snapshot()).ok; ok["nginx"] < 20 || ok["haproxy"] < 20 {
			return fmt.Errorf("load warming up: %v", ok)
		}
		return nil
	})

	tKill := time.Now()
	leader.Kill()
	// How long the cluster has no leader (the running servers agree on a
	// new one), and how long it takes no write (through a client agent),
	// measured while the test goes on.
	electAt, writeAt := make(chan time.Duration, 1), make(chan time.Duration, 1)
	go func() {
		if err := testenv.WaitFor(60*time.Second, func() error { _, err := e.consul.Leader(); return err }); err != nil {
			electAt <- -1
			return
		}
		electAt <- time.Since(tKill)
	}()
	kv := e.hosts[0].agent.Client.KV()
	go func() {
		err := testenv.WaitFor(60*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := kv.Put(&api.KVPair{Key: "switchyard-e2e/cluster-probe", Value: []byte(time.Now().String())}, (&api.WriteOptions{}).WithContext(ctx))
			return err
		})
		if err != nil {
			writeAt <- -1
			return
		}
		writeAt <- time.Since(tKill)
	}()
	// A change made during the election: one more web instance on host-a.
	c := e.run(t, e.hosts[0], "web")
	changeAt := time.Since(tKill)
	catalogAt := e.watchCatalogFor(c, tKill, agentSyncBound+10*time.Second)
	e.waitServed(t, agentSyncBound+renderBound+10*time.Second)
	flowAt := time.Since(tKill)
	elect, write, inCatalog := <-electAt, <-writeAt, <-catalogAt
	flow, sync := flowAt-changeAt, inCatalog-changeAt
	newLeader, err := e.consul.Leader()
	if err != nil {
		t.Fatal(err)
	}
	// The load runs a moment longer on the new config.
	nAtFlow := len(load.snapshot())
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := len(load.snapshot()); n < nAtFlow+100 {
			return fmt.Errorf("%d requests since the change flowed, want 100", n-nAtFlow)
		}
		return nil
	})
	sums := load.stats(load.end())
	var samples, changes, violations int
	var firstViolation string
	for _, w := range watches {
		s, ch, v, f := w.end()
		samples, changes, violations = samples+s, changes+ch, violations+v
		if firstViolation == "" {
			firstViolation = f
		}
	}
	t.Logf("leader %s killed: %s leads after %s; first write accepted after %s; %s running %s after the kill, in the catalog %s after that and served by both proxies %s after that; "+
		"%s; live files sampled %d times, %d changes, %d with an emptied upstream",
		leader.Name, newLeader.Name, ms(elect), ms(write), c.name, ms(changeAt), ms(sync), ms(flow), sums, samples, changes, violations)
	if n := sums.bad(); n > 0 {
		t.Errorf("%d requests failed or were misrouted after the leader was killed; first: %s", n, sums.first)
	}
	if violations > 0 {
		t.Errorf("an upstream was emptied %d times; first: %s", violations, firstViolation)
	}
	switch {
	case inCatalog < 0:
		t.Errorf("the change made during the election never reached the catalog (waited %s)", agentSyncBound+10*time.Second)
	case sync > agentSyncBound:
		t.Errorf("the change made during the election reached the catalog %s after it ran, bound %s (Consul's agent sync retry)", ms(sync), agentSyncBound)
	case flowAt-inCatalog > renderBound:
		t.Errorf("the change made during the election reached the proxies %s after the catalog had it, bound %s", ms(flowAt-inCatalog), renderBound)
	}
	if elect < 0 || write < 0 {
		t.Errorf("no new leader (%s) or no write accepted (%s) after the leader's death", elect, write)
	}

	// The old leader comes back (same data dir) and is a voter again.
	tBack := time.Now()
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	if err := e.consul.WaitVoters(60*time.Second, 3); err != nil {
		t.Fatal(err)
	}
	rejoin := time.Since(tBack)
	t.Logf("%s restarted and a voter again after %s", leader.Name, ms(rejoin))
	if err := e.catalogCheck(); err != nil {
		t.Error(err)
	}
	e.record("3. Consul leader killed -9",
		fmt.Sprintf("0 failed requests, no upstream emptied; a change made during the election is in the catalog within %s of it (Consul's agent sync) and in both proxies within %s of the catalog", agentSyncBound, renderBound),
		fmt.Sprintf("pause: new leader %s after the kill, writes accepted again after %s; the change (running %s after the kill) in the catalog %s later, served %s after the catalog; %d requests, 0 failed; %d live-file samples, 0 emptied; old leader a voter again %s after its restart",
			ms(elect), ms(write), ms(changeAt), ms(sync), ms(flowAt-inCatalog), sums.total(), samples, ms(rejoin)))
}

// watchCatalogFor reports, on the channel it returns, when (counted from
// since) the catalog first lists c as an instance of its service, or -1
// if it does not within timeout. It reads stale, so followers answer
// while the cluster has no leader.
func (e *clusterEnv) watchCatalogFor(c *clusterCtr, since time.Time, timeout time.Duration) <-chan time.Duration {
	at := make(chan time.Duration, 1)
	cat := e.spare.Client.Catalog()
	go func() {
		err := testenv.WaitFor(timeout, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			entries, _, err := cat.Service(c.svc, "", (&api.QueryOptions{AllowStale: true}).WithContext(ctx))
			if err != nil {
				return err
			}
			for _, s := range entries {
				if s.ServiceAddress == c.ip {
					return nil
				}
			}
			return fmt.Errorf("%s not in the catalog", c.name)
		})
		if err != nil {
			at <- -1
			return
		}
		at <- time.Since(since)
	}()
	return at
}

// Scenario 4: the proxy host lost; a renderer started on the spare host
// with only its own agent's address and the templates takes over.
func clusterProxyHostLost(t *testing.T, e *clusterEnv) {
	old := e.edge
	last := map[string][]byte{}
	for _, p := range old.proxies {
		p.renderer.KillTree(t)
	}
	old.agent.Kill()
	for _, p := range old.proxies {
		b, err := os.ReadFile(p.conf)
		if err != nil {
			t.Fatal(err)
		}
		last[p.kind] = b
		if _, err := clusterGet(p.listen, "web"); err == nil {
			t.Fatalf("%s still answers on %s after its host was killed", p.kind, p.listen)
		}
	}

	tStart := time.Now()
	e.edge = e.startEdge(t, e.spare)
	serveAt := map[string]time.Duration{}
	testenv.Eventually(t, failoverBound+20*time.Second, func() error {
		for _, p := range e.edge.proxies {
			if _, ok := serveAt[p.kind]; ok {
				continue
			}
			if p.renderer.Exited() {
				return fmt.Errorf("%s exited", p.renderer.Name)
			}
			for _, svc := range e.svcs {
				if _, err := clusterGet(p.listen, svc); err != nil {
					return fmt.Errorf("%s: %w", p.kind, err)
				}
			}
			serveAt[p.kind] = time.Since(tStart)
		}
		return nil
	})
	e.waitServed(t, 20*time.Second)
	for _, p := range e.edge.proxies {
		b, err := os.ReadFile(p.conf)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != string(last[p.kind]) {
			t.Errorf("%s: the config rendered on %s differs from %s's last:\n%s", p.kind, e.edge.name, old.name, firstDiff(last[p.kind], b))
		}
		if serveAt[p.kind] > failoverBound {
			t.Errorf("%s on %s served %s after the renderer started, bound %s", p.kind, e.edge.name, ms(serveAt[p.kind]), failoverBound)
		}
	}
	t.Logf("proxy host lost: on %s, nginx served every service %s and HAProxy %s after the renderers started; configs compared byte for byte (%d and %d bytes)",
		e.edge.name, ms(serveAt["nginx"]), ms(serveAt["haproxy"]), len(last["nginx"]), len(last["haproxy"]))
	e.record("4. proxy host lost (renderers, proxies, Consul agent kill -9); renderers started on edge-2 against its own agent",
		fmt.Sprintf("byte-identical configs, serving within %s", failoverBound),
		fmt.Sprintf("nginx.conf and haproxy.cfg byte-identical (%d, %d bytes); serving after %s (nginx) and %s (HAProxy)",
			len(last["nginx"]), len(last["haproxy"]), ms(serveAt["nginx"]), ms(serveAt["haproxy"])))
}

// Scenario 5: a registrar upgraded in place: the old process stopped
// (SIGTERM, --on-shutdown keep), a new one started under a new name.
func clusterRegistrarUpgrade(t *testing.T, e *clusterEnv) {
	h := e.hosts[0]
	var cl *api.Client
	for _, s := range e.consul.Servers {
		if s.Running() {
			cl = s.Client
			break
		}
	}
	before, err := e.catalogSnapshot(cl)
	if err != nil {
		t.Fatal(err)
	}
	confs := map[string][]byte{}
	for _, p := range e.edge.proxies {
		if confs[p.kind], err = os.ReadFile(p.conf); err != nil {
			t.Fatal(err)
		}
	}

	// The catalog, sampled every 50ms (bounded): any sample other than
	// the one before is a blink or a duplicate.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var samples, diffs, sampleErrs int
	var firstDiffSeen string
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for range 2000 {
			snap, err := e.catalogSnapshot(cl)
			mu.Lock()
			samples++
			switch {
			case err != nil:
				sampleErrs++
			case !maps.EqualFunc(snap, before, slices.Equal[[]string]):
				diffs++
				if firstDiffSeen == "" {
					firstDiffSeen = fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), snap)
				}
			}
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	load := startClusterLoad(t, e.edge.proxies, e.svcs, 90*time.Second)
	testenv.Eventually(t, 10*time.Second, func() error {
		if ok := load.stats(load.snapshot()).ok; ok["nginx"] < 20 || ok["haproxy"] < 20 {
			return fmt.Errorf("load warming up: %v", ok)
		}
		return nil
	})

	old := h.registrar
	t0 := time.Now()
	if err := old.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := old.Wait(15 * time.Second); err != nil || code != 0 {
		t.Fatalf("%s on SIGTERM: exit %d, %v", old.Name, code, err)
	}
	e.startRegistrar(t, h)
	readyAt := time.Since(t0)
	ready := time.Now()
	// The new registrar's start-up sync, and one periodic resync (--resync
	// 5) after it, run under the load.
	var st struct {
		LastResync *time.Time `json:"last_resync"`
		Services   int        `json:"services"`
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		code, body, err := httpGet("http://" + h.regStatus + "/status")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("/status %d", code)
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			return err
		}
		if st.LastResync == nil || !st.LastResync.After(ready) {
			return errors.New("no periodic resync since the new registrar was ready")
		}
		return nil
	})
	sums := load.stats(load.end())
	close(stop)
	wg.Wait()
	after, err := e.catalogSnapshot(cl)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("registrar upgrade on %s: old stopped and new ready after %s; new owns %d services; %s; catalog sampled %d times, %d differed, %d errors",
		h.name, ms(readyAt), st.Services, sums, samples, diffs, sampleErrs)
	if n := sums.bad(); n > 0 {
		t.Errorf("%d requests failed or were misrouted during the registrar upgrade; first: %s", n, sums.first)
	}
	if diffs > 0 {
		t.Errorf("the catalog changed %d times during the upgrade (a blink or a duplicate); first: %s\nbefore: %v", diffs, firstDiffSeen, before)
	}
	if !maps.EqualFunc(after, before, slices.Equal[[]string]) {
		t.Errorf("catalog after the upgrade:\n%v\nbefore:\n%v", after, before)
	}
	if want := len(h.ctrs); st.Services != want {
		t.Errorf("the new registrar owns %d services, want %d (one per container)", st.Services, want)
	}
	changed := []string{}
	for _, p := range e.edge.proxies {
		b, err := os.ReadFile(p.conf)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != string(confs[p.kind]) {
			changed = append(changed, p.kind)
		}
	}
	sort.Strings(changed)
	if len(changed) > 0 {
		t.Errorf("live config(s) rewritten by the upgrade: %v", changed)
	}
	e.record("5. registrar upgraded on host-a (SIGTERM, new process under a new name)",
		"0 failed requests, catalog unchanged throughout (no blink, no duplicate)",
		fmt.Sprintf("%d requests, %d failed; catalog sampled %d times, %d differed; configs unchanged; new registrar ready %s after the old one was told to stop",
			sums.total(), sums.bad(), samples, diffs, ms(readyAt)))
}
