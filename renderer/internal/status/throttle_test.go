package status

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// Issue 11: a Consul that refuses the runner while templates miss data
// makes the renderer unready, and says why; throttled with every
// dependency in hand, or a plain outage, does not.
func TestThrottleReadiness(t *testing.T) {
	r := NewRecorder(func(s string) string { return strings.ReplaceAll(s, "tok", "[redacted]") })
	r.AddTemplate("/t/a.tmpl", "/srv/a.conf", "")
	r.Accepted("/srv/a.conf", true, t0)
	r.ConsulError(errors.New("connection refused"), t0)
	if ok, why := r.Snapshot().Ready(); !ok {
		t.Fatalf("outage after a render: unready (%s)", why)
	}
	r.ConsulThrottled(Throttle429, errors.New("health.service(x): 429 ?token=tok"), t0.Add(time.Second))
	r.ConsulThrottled(Throttle429, errors.New("429"), t0.Add(2*time.Second))
	r.ConsulThrottled(ThrottleConnReset, errors.New("EOF"), t0.Add(3*time.Second))
	if ok, why := r.Snapshot().Ready(); !ok {
		t.Fatalf("throttled, nothing missing: unready (%s)", why)
	}
	r.MissingDeps(7)
	ok, why := r.Snapshot().Ready()
	if ok || !strings.Contains(why, "7 dependencies without data") || !strings.Contains(why, "conn_reset") {
		t.Fatalf("throttled with missing data: ready=%v %q", ok, why)
	}
	s := r.Snapshot().Runner
	if s.Throttled[Throttle429] != 2 || s.Throttled[ThrottleConnReset] != 1 || !s.ThrottledSince.Equal(t0.Add(time.Second)) {
		t.Fatalf("runner %+v", s)
	}
	_, fams := scrapeSnap(t, r.Snapshot(), nil)
	for labels, want := range map[string]float64{"429": 2, "conn_reset": 1} {
		m := metricWith(fams, metricPrefix+throttledName, map[string]string{"reason": labels})
		if m == nil || sampleValue(m) != want {
			t.Errorf("consul_throttled_total{reason=%s} = %v, want %v", labels, m, want)
		}
	}
	if m := metricWith(fams, metricPrefix+"consul_throttled", map[string]string{}); m == nil || sampleValue(m) != 1 {
		t.Errorf("consul_throttled gauge: %v", m)
	}
	r.ThrottleOver()
	if ok, why := r.Snapshot().Ready(); !ok {
		t.Fatalf("throttle over: unready (%s)", why)
	}
}

func TestThrottleRedacted(t *testing.T) {
	r := NewRecorder(func(s string) string { return strings.ReplaceAll(s, "tok", "[redacted]") })
	r.ConsulThrottled(Throttle429, errors.New("GET /v1/health?token=tok: 429"), t0)
	if got := r.Snapshot().Runner.LastThrottle; strings.Contains(got, "tok") {
		t.Fatalf("secret kept: %q", got)
	}
	if got := r.Redact("a tok b"); got != "a [redacted] b" {
		t.Fatalf("Redact = %q", got)
	}
	var nilRec *Recorder
	if nilRec.Redact("x") != "x" {
		t.Fatal("nil recorder redacts")
	}
}

// Refusals that go on with every dependency in hand leave the renderer
// blind (a refused services watch never sees a new service): unready once
// they have lasted RefusedFor and still come, ready again once they stop
// for RefusedFor or a complete pass ends the episode. A stress run saw
// the services watch refused for good with nothing missing, and /ready
// stayed true.
func TestThrottleBlindWithEveryDependency(t *testing.T) {
	r := NewRecorder(nil)
	r.AddTemplate("/t/a.tmpl", "/srv/a.conf", "")
	r.Accepted("/srv/a.conf", true, t0)
	r.ConsulThrottled(Throttle429, errors.New("catalog.services: 429"), t0)
	r.ConsulThrottled(ThrottleConnReset, errors.New("catalog.services: readLoopPeekFailLocked"), t0.Add(RefusedFor))
	ready := func(at time.Time) (bool, string) {
		s := r.Snapshot()
		s.At = at
		return s.Ready()
	}
	for _, c := range []struct {
		at    time.Time
		ready bool
	}{
		{t0.Add(RefusedFor / 2), true},              // a short episode
		{t0.Add(RefusedFor + time.Second), false},   // long, and a refusal 1s ago
		{t0.Add(2*RefusedFor - time.Second), false}, // still within RefusedFor of the last refusal
		{t0.Add(2*RefusedFor + time.Second), true},  // refusals stopped RefusedFor ago
	} {
		ok, why := ready(c.at)
		if ok != c.ready || (!ok && !strings.Contains(why, "do not follow the catalog")) {
			t.Errorf("at t0+%s: ready=%v %q, want %v", c.at.Sub(t0), ok, why, c.ready)
		}
	}
	r.ThrottleOver()
	if ok, why := ready(t0.Add(RefusedFor + time.Second)); !ok {
		t.Fatalf("episode over: unready (%s)", why)
	}
}
