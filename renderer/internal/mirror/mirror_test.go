package mirror

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"testing/synctest"
	"time"
)

const testWait = time.Minute

// bubble runs a mirror over fake in a synctest bubble, stopped at the end.
func bubble(t *testing.T, fn func(t *testing.T, f *fakeConsul, m client)) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul()
		f.set("web", "10.0.0.1")
		f.set("api", "10.0.1.1")
		m := New(Options{transport: f, UpstreamWait: 5 * time.Minute, FirstSyncWait: 10 * time.Second})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { m.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		fn(t, f, client{m, ctx}) // requests end with the bubble, even after a Fatal
	})
}

type answer struct {
	code  int
	index uint64
	body  string
	at    time.Time
}

// client sends requests to a mirror, within ctx.
type client struct {
	m   *Mirror
	ctx context.Context
}

func get(c client, url string) answer {
	rec := httptest.NewRecorder()
	c.m.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, url, nil).WithContext(c.ctx))
	idx, _ := strconv.ParseUint(rec.Header().Get("X-Consul-Index"), 10, 64)
	return answer{code: rec.Code, index: idx, body: rec.Body.String(), at: time.Now()}
}

// async starts a request; its answer arrives on the channel.
func async(m client, url string) <-chan answer {
	ch := make(chan answer, 1)
	go func() { ch <- get(m, url) }()
	return ch
}

func blockingURL(path string, idx uint64, wait time.Duration) string {
	return path + "?stale=&index=" + strconv.FormatUint(idx, 10) + "&wait=" + strconv.FormatInt(wait.Milliseconds(), 10) + "ms"
}

func pending(ch <-chan answer) bool {
	select {
	case a := <-ch:
		_ = a
		return false
	default:
		return true
	}
}

func TestBlockingQueryTimesOutWithSameIndexAndNoUpstreamTraffic(t *testing.T) {
	bubble(t, func(t *testing.T, f *fakeConsul, m client) {
		first := get(m, "/v1/health/service/web?stale=")
		if first.code != 200 || first.index < 1 || first.body != "[\"10.0.0.1\"]\n" {
			t.Fatalf("first answer = %+v", first)
		}
		start := time.Now()
		ch := async(m, blockingURL("/v1/health/service/web", first.index, testWait))
		synctest.Wait()
		if !pending(ch) {
			t.Fatal("blocking query answered before its wait with nothing changed")
		}
		a := <-ch
		if a.index != first.index || a.body != first.body {
			t.Fatalf("after the wait: %+v, want index %d and the same body", a, first.index)
		}
		if d := a.at.Sub(start); d < testWait || d > testWait+testWait/16 {
			t.Fatalf("blocking query lasted %s, want wait %s plus at most 1/16 jitter", d, testWait)
		}
		if n := f.count("/v1/health/service/web"); n != 1 {
			t.Fatalf("upstream health/service requests = %d, want 1 (answers served from the mirror)", n)
		}
	})
}

func TestChangeWakesOnlyTheServiceThatChanged(t *testing.T) {
	bubble(t, func(t *testing.T, f *fakeConsul, m client) {
		web := get(m, "/v1/health/service/web?stale=")
		api := get(m, "/v1/health/service/api?stale=")
		wch := async(m, blockingURL("/v1/health/service/web", web.index, testWait))
		ach := async(m, blockingURL("/v1/health/service/api", api.index, testWait))
		time.Sleep(time.Second) // an isolated change, long after the last
		start := time.Now()
		f.set("web", "10.0.0.1", "10.0.0.2")
		synctest.Wait()
		if pending(wch) {
			t.Fatal("web's blocking query did not wake on web's change")
		}
		if !pending(ach) {
			t.Fatal("api's blocking query woke on web's change")
		}
		got := get(m, "/v1/health/service/web?stale=")
		if got.index <= web.index || got.body != "[\"10.0.0.1\",\"10.0.0.2\"]\n" {
			t.Fatalf("web after change = %+v (was index %d)", got, web.index)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Fatalf("change reached the mirror in %s", d)
		}
		a := <-ach
		if a.index != api.index {
			t.Fatalf("api index moved %d -> %d without a change", api.index, a.index)
		}
	})
}

func TestIndexOnlyMovesForwardAcrossAgentReset(t *testing.T) {
	bubble(t, func(t *testing.T, f *fakeConsul, m client) {
		web := get(m, "/v1/health/service/web?stale=")
		api := get(m, "/v1/health/service/api?stale=")
		ch := async(m, blockingURL("/v1/health/service/web", web.index, testWait))
		time.Sleep(time.Second)
		// Restored from an old snapshot: lower indexes, web changed.
		f.restart(3)
		f.mu.Lock()
		f.services["web"] = fakeService{addrs: []string{"10.9.9.9"}, index: 3}
		f.mu.Unlock()
		f.set("zzz", "10.1.1.1")
		a := <-ch
		if a.index <= web.index || a.body != "[\"10.9.9.9\"]\n" {
			t.Fatalf("after the reset web = %+v, want an index above %d and the new address", a, web.index)
		}
		if b := get(m, "/v1/health/service/api?stale="); b.index < api.index {
			t.Fatalf("api index went backwards: %d -> %d", api.index, b.index)
		}
	})
}

func TestNoAnswerBeforeConsulWasRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul()
		f.set("web", "10.0.0.1")
		f.down()
		m := New(Options{transport: f, FirstSyncWait: 10 * time.Second, MaxBackoff: time.Second})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { m.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		c := client{m, ctx}
		if a := get(c, "/v1/health/service/web?stale="); a.code != http.StatusServiceUnavailable {
			t.Fatalf("before any read of Consul: %+v, want 503", a)
		}
		if a := get(c, "/v1/status/leader"); a.code != http.StatusServiceUnavailable {
			t.Fatalf("status/leader before any read: %d, want 503", a.code)
		}
		f.up()
		time.Sleep(2 * time.Second) // past the watch's backoff
		if a := get(c, "/v1/health/service/web?stale="); a.code != 200 || a.body != "[\"10.0.0.1\"]\n" {
			t.Fatalf("after Consul answered: %+v", a)
		}
	})
}

func TestOutageKeepsLastKnownDataAndFailsBlockingQueries(t *testing.T) {
	bubble(t, func(t *testing.T, f *fakeConsul, m client) {
		web := get(m, "/v1/health/service/web?stale=")
		ch := async(m, blockingURL("/v1/health/service/web", web.index, testWait))
		synctest.Wait()
		f.kill()
		synctest.Wait()
		if a := <-ch; a.code != http.StatusInternalServerError {
			t.Fatalf("blocking query when the agent died: %+v, want 500 at once", a)
		}
		if a := get(m, "/v1/health/service/web?stale="); a.code != 200 || a.body != web.body || a.index != web.index {
			t.Fatalf("index-0 query during the outage: %+v, want last-known data", a)
		}
		if a := get(m, blockingURL("/v1/health/service/web", web.index, testWait)); a.code != http.StatusInternalServerError {
			t.Fatalf("blocking query during the outage: %d, want 500", a.code)
		}
		if a := get(m, "/v1/status/leader"); a.code != http.StatusServiceUnavailable {
			t.Fatalf("status/leader during the outage: %d, want 503", a.code)
		}
		f.up()
		time.Sleep(11 * time.Second) // past the longest backoff
		if a := get(m, "/v1/status/leader"); a.code != 200 {
			t.Fatalf("status/leader after the outage: %d, want 200", a.code)
		}
		ch = async(m, blockingURL("/v1/health/service/web", web.index, testWait))
		synctest.Wait()
		if !pending(ch) {
			t.Fatal("blocking query with a current index answered at once after the outage")
		}
		<-ch
	})
}

func TestWaitCappedAndFutureIndexAnsweredAtOnce(t *testing.T) {
	bubble(t, func(t *testing.T, f *fakeConsul, m client) {
		web := get(m, "/v1/health/service/web?stale=")
		start := time.Now()
		a := get(m, blockingURL("/v1/health/service/web", web.index, time.Hour))
		if d := a.at.Sub(start); d < maxWait || d > maxWait+maxWait/16 {
			t.Fatalf("wait=1h lasted %s, want Consul's cap %s (+1/16)", d, maxWait)
		}
		start = time.Now()
		a = get(m, blockingURL("/v1/health/service/web", 1<<40, testWait))
		if a.code != 200 || a.index != web.index || time.Since(start) != 0 {
			t.Fatalf("index from the future: %+v after %s, want the current index at once", a, time.Since(start))
		}
	})
}

func TestWatchIsNoBusyLoop(t *testing.T) {
	bubble(t, func(t *testing.T, f *fakeConsul, m client) {
		get(m, "/v1/health/service/web?stale=")
		time.Sleep(30 * time.Minute)
		// One dump per upstream wait (5 min) when nothing changes.
		if n := f.count("/v1/internal/ui/nodes"); n > 30/5+2 {
			t.Fatalf("%d dump requests in 30 idle minutes", n)
		}
		if n := f.count("/v1/health/service/web"); n != 1 {
			t.Fatalf("%d health/service requests in 30 idle minutes, want 1", n)
		}
	})
}

func TestSecretRequired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul()
		f.set("web", "10.0.0.1")
		m := New(Options{transport: f, Secret: "s3cret"})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { m.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		for _, tok := range []string{"", "wrong"} {
			req := httptest.NewRequest(http.MethodGet, "/v1/health/service/web", nil)
			req.Header.Set("X-Consul-Token", tok)
			rec := httptest.NewRecorder()
			m.ServeHTTP(rec, req)
			if rec.Code != http.StatusForbidden {
				t.Fatalf("token %q: %d, want 403", tok, rec.Code)
			}
		}
		req := httptest.NewRequest(http.MethodGet, "/v1/health/service/web", nil)
		req.Header.Set("X-Consul-Token", "s3cret")
		rec := httptest.NewRecorder()
		m.ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Fatalf("right token: %d, want 200", rec.Code)
		}
	})
}

// TestFirstAnswersOfABurstComeTogether: a runner's first pass asks for
// every service at once. The mirror fetches them two at a time, and
// answers them all together when the last is in, so consul-template runs
// its template once rather than once per small batch; a lone first
// question (a new service later) is not held.
func TestFirstAnswersOfABurstComeTogether(t *testing.T) {
	bubble(t, func(t *testing.T, f *fakeConsul, m client) {
		get(m, "/v1/status/leader") // the first dump is read
		f.mu.Lock()
		f.latency = 10 * time.Millisecond
		f.mu.Unlock()
		var chs []<-chan answer
		for i := range 6 {
			name := "s" + strconv.Itoa(i)
			f.set(name, "10.0.2."+strconv.Itoa(i+1))
			chs = append(chs, async(m, "/v1/health/service/"+name+"?stale="))
		}
		start := time.Now()
		var at []time.Duration
		for _, ch := range chs {
			a := <-ch
			if a.code != 200 {
				t.Fatalf("answer %+v", a)
			}
			at = append(at, a.at.Sub(start))
		}
		for _, d := range at {
			if d != 30*time.Millisecond { // 6 fetches, 2 slots, 10 ms each
				t.Fatalf("first answers came at %v; want all at 30ms, when the last fetch is in", at)
			}
		}
		start = time.Now()
		if a := get(m, "/v1/health/service/web?stale="); a.at.Sub(start) != 10*time.Millisecond {
			t.Fatalf("a lone first question answered after %s, want the fetch's 10ms", a.at.Sub(start))
		}
	})
}

// TestFirstAnswersAreHeldAtMostMaxFirstHold: when fetching the burst
// takes longer, the answers already in go out maxFirstHold after the
// first of them, not after the last fetch.
func TestFirstAnswersAreHeldAtMostMaxFirstHold(t *testing.T) {
	bubble(t, func(t *testing.T, f *fakeConsul, m client) {
		get(m, "/v1/status/leader")
		f.mu.Lock()
		f.latency = 400 * time.Millisecond
		f.mu.Unlock()
		var chs []<-chan answer
		for i := range 10 { // 5 rounds of 400 ms: 2 s in all
			name := "s" + strconv.Itoa(i)
			f.set(name, "10.0.2."+strconv.Itoa(i+1))
			chs = append(chs, async(m, "/v1/health/service/"+name+"?stale="))
		}
		start := time.Now()
		first, last := time.Duration(1<<62), time.Duration(0)
		for _, ch := range chs {
			d := (<-ch).at.Sub(start)
			first, last = min(first, d), max(last, d)
		}
		if want := 400*time.Millisecond + maxFirstHold; first != want || last != 2*time.Second {
			t.Fatalf("first answers %s, last %s; want the held ones at %s and the rest when the last fetch is in (2s)", first, last, want)
		}
	})
}

// TestDumpWatchBacksOffUnderChurn: under a change every 200 ms the dump
// watch reads about once a second instead of once per change (each read
// costs Consul the whole node dump), the last change is still served
// within maxChurnGap, and a change after a quiet spell is read at once.
func TestDumpWatchBacksOffUnderChurn(t *testing.T) {
	bubble(t, func(t *testing.T, f *fakeConsul, m client) {
		get(m, "/v1/health/service/web?stale=")
		time.Sleep(2 * churnQuiet)
		dumps := f.count("/v1/internal/ui/nodes")
		var last string
		for i := range 50 { // 10 s of churn
			last = "10.0.9." + strconv.Itoa(i+1)
			f.set("web", last)
			time.Sleep(200 * time.Millisecond)
		}
		if n := f.count("/v1/internal/ui/nodes") - dumps; n > 15 || n < 8 {
			t.Fatalf("%d dump reads for 50 changes in 10 s; want about one a second", n)
		}
		time.Sleep(maxChurnGap)
		if a := get(m, "/v1/health/service/web?stale="); a.body != "[\""+last+"\"]\n" {
			t.Fatalf("after the churn: %q, want the last change (%s)", a.body, last)
		}

		time.Sleep(2 * churnQuiet)
		web := get(m, "/v1/health/service/web?stale=")
		ch := async(m, blockingURL("/v1/health/service/web", web.index, testWait))
		start := time.Now()
		f.set("web", "10.0.9.99")
		if a := <-ch; a.at.Sub(start) > minGap || a.body != "[\"10.0.9.99\"]\n" {
			t.Fatalf("a change after a quiet spell: %q after %s, want it at once", a.body, a.at.Sub(start))
		}
	})
}

// TestDumpWatchSeesAFlapThatDividesItsGap: a service flapping every 100
// ms, read at gaps of 200 ms, 400 ms, ... 1 s, is in the same state at
// every read unless the gaps vary: consul-template must still see it
// change.
func TestDumpWatchSeesAFlapThatDividesItsGap(t *testing.T) {
	bubble(t, func(t *testing.T, f *fakeConsul, m client) {
		f.mu.Lock()
		f.dumpLatency = 3 * time.Millisecond // a read starting at a flip sees it
		f.mu.Unlock()
		web := get(m, "/v1/health/service/web?stale=")
		time.Sleep(2 * churnQuiet)
		flap := func(n int) {
			for i := range n {
				f.set("web", "10.0.9."+strconv.Itoa(i%2+1))
				time.Sleep(100 * time.Millisecond)
			}
		}
		flap(50) // the gap grows to maxChurnGap
		// A consul-template watch, counting the changes it is told of.
		seen, stop := make(chan int, 1), make(chan struct{})
		go func() {
			n, idx := 0, web.index
			for {
				ch := async(m, blockingURL("/v1/health/service/web", idx, testWait))
				select {
				case a := <-ch:
					n, idx = n+1, a.index
				case <-stop:
					seen <- n
					return
				}
			}
		}()
		flap(300)
		close(stop)
		// About 34 reads in 30 s, each seeing the other state half the
		// time: fewer than 5 seen changes is a 1 in 50,000 chance.
		if n := <-seen; n < 5 {
			t.Fatalf("%d changes seen in 30 s of a service flapping every 100 ms", n)
		}
	})
}

func TestChurnGap(t *testing.T) {
	g := time.Duration(0)
	var seen []time.Duration
	for range 7 {
		g = churnGap(g, 10*time.Millisecond)
		seen = append(seen, g)
	}
	want := []time.Duration{50, 100, 200, 400, 800, 1000, 1000}
	for i := range want {
		if seen[i] != want[i]*time.Millisecond {
			t.Fatalf("gaps under churn %v, want %v ms", seen, want)
		}
	}
	if g = churnGap(g, churnQuiet); g != 0 {
		t.Fatalf("after a quiet spell the gap is %s, want 0", g)
	}
}
