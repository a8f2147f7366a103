package policy

import (
	"crypto/sha256"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// TestRestartsCountRealDeathsOnly: the policy gives up at the Max-th death
// within the window and not before, however often it is consulted about
// the same death; deaths older than the window are forgotten.
func TestRestartsCountRealDeathsOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRestarts(5, time.Minute)
		var waits []time.Duration
		for i := 1; i <= 4; i++ {
			d := r.Died(time.Now())
			if d.GiveUp || d.Deaths != i {
				t.Fatalf("death %d: %+v", i, d)
			}
			waits = append(waits, d.After)
			time.Sleep(d.After)
		}
		if waits[0] != DefaultRestartFirst || waits[3] != 8*DefaultRestartFirst {
			t.Errorf("backoff = %v", waits)
		}
		if d := r.Died(time.Now()); !d.GiveUp || d.Deaths != 5 {
			t.Fatalf("5th death within a minute: %+v", d)
		}
	})
}

func TestRestartsForgetOldDeaths(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRestarts(3, time.Minute)
		for range 10 {
			if d := r.Died(time.Now()); d.GiveUp {
				t.Fatalf("gave up on deaths spread over 10 minutes: %+v", d)
			}
			time.Sleep(31 * time.Second)
		}
	})
}

func TestRestartsBackoffCapped(t *testing.T) {
	r := &Restarts{Max: 100, Window: time.Hour, First: time.Second, Cap: 5 * time.Second}
	now := time.Unix(0, 0)
	var last Restart
	for range 20 {
		last = r.Died(now)
	}
	if last.After != 5*time.Second {
		t.Fatalf("after = %v, want the cap", last.After)
	}
}

// TestOutageRebuildsOnceConsulAnswers: errors start probing; failed
// probes back off; the first good answer rebuilds, once.
func TestOutageRebuildsOnceConsulAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := NewOutage(time.Second)
		if !o.ConsulError(time.Now(), true) {
			t.Fatal("first error did not start a probe")
		}
		if o.ConsulError(time.Now(), true) {
			t.Fatal("second error started a second probe")
		}
		down := errors.New("connection refused")
		var delays []time.Duration
		for range 5 {
			s := o.ProbeAnswered(time.Now(), down, true)
			if s.Rebuild || s.ProbeIn == 0 {
				t.Fatalf("down: %+v", s)
			}
			delays = append(delays, s.ProbeIn)
			time.Sleep(s.ProbeIn)
			if !o.ProbeDue() {
				t.Fatal("probe timer did not probe")
			}
		}
		if delays[0] != ProbeFirst || delays[4] != ProbeMax {
			t.Errorf("probe delays = %v", delays)
		}
		s := o.ProbeAnswered(time.Now(), nil, true)
		if !s.Rebuild || s.Outage < 5*time.Second {
			t.Fatalf("up: %+v", s)
		}
		if !o.Since().IsZero() || o.ProbeDue() {
			t.Fatal("outage not over after the rebuild")
		}
	})
}

func TestOutageNothingToRecoverWithoutData(t *testing.T) {
	o := NewOutage(time.Second)
	if o.ConsulError(time.Now(), false) {
		t.Fatal("a runner without data probed")
	}
	o = NewOutage(time.Second)
	o.ConsulError(time.Now(), true)
	if s := o.ProbeAnswered(time.Now(), nil, false); s.Rebuild {
		t.Fatal("rebuilt a runner that died meanwhile")
	}
}

// TestOutageGapDoublesAndResets: rebuilds after repeated outages are
// spaced by a doubling gap, which starts over after a quiet minute.
func TestOutageGapDoublesAndResets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := NewOutage(time.Second)
		rebuild := func() Step {
			o.ConsulError(time.Now(), true)
			for {
				s := o.ProbeAnswered(time.Now(), nil, true)
				if s.Rebuild {
					return s
				}
				time.Sleep(s.ProbeIn)
				o.ProbeDue()
			}
		}
		start := time.Now()
		rebuild()
		rebuild() // waits 2s: the gap doubled at the first rebuild
		rebuild() // waits 4s
		if got := time.Since(start); got != 6*time.Second {
			t.Fatalf("three rebuilds took %v, want 2s+4s of gaps", got)
		}
		time.Sleep(2 * OutageQuiet)
		t0 := time.Now()
		rebuild()
		if time.Since(t0) != 0 {
			t.Fatal("gap did not start over after a quiet while")
		}
	})
}

func render(s string) Render {
	return Render{Contents: []byte(s), Sum: sha256.Sum256([]byte(s))}
}

// TestGuardHoldsUntilConsulConfirms: an emptying render is held; it is
// applied only after the hold-down and a leader answer, and a leaderless
// answer retries later instead of applying.
func TestGuardHoldsUntilConsulConfirms(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := NewGuard(0.5, 10*time.Second)
		before, after := Counts{"web": 3}, Counts{"web": 0}
		r := render("empty")
		if hold, fresh := g.Judge("d", before, after, r, time.Now()); !hold || !fresh {
			t.Fatal("emptying render not held")
		}
		if got := g.Ask(time.Now()); len(got) != 0 {
			t.Fatalf("asked before the hold-down: %v", got)
		}
		next, _ := g.Next()
		time.Sleep(time.Until(next))
		asked := g.Ask(time.Now())
		if asked["d"] != r.Sum {
			t.Fatalf("due hold not asked: %v", asked)
		}
		if _, ok := g.Answer("d", r.Sum, errors.New("no leader"), time.Now()); ok {
			t.Fatal("applied without a leader")
		}
		next, _ = g.Next()
		if time.Until(next) != LeaderRetry {
			t.Fatalf("retry in %v", time.Until(next))
		}
		time.Sleep(LeaderRetry)
		g.Ask(time.Now())
		h, ok := g.Answer("d", r.Sum, nil, time.Now())
		if !ok || string(h.Contents) != "empty" {
			t.Fatal("not applied after the leader answered")
		}
	})
}

// TestGuardNewerRenderClearsHold: item 5 of issue 7. A newer render that
// is rejected clears the hold, so the older held bytes never go live; an
// answer about replaced bytes applies nothing.
func TestGuardNewerRenderClearsHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := NewGuard(0.5, time.Second)
		r1, r2 := render("one"), render("two")
		g.Judge("d", Counts{"a": 2}, Counts{"a": 0}, r1, time.Now())
		time.Sleep(time.Second)
		g.Ask(time.Now())
		g.Judge("d", Counts{"a": 2}, Counts{"a": 0}, r2, time.Now())
		if _, ok := g.Answer("d", r1.Sum, nil, time.Now()); ok {
			t.Fatal("applied bytes a newer render replaced")
		}
		g.Clear("d") // the newest render failed validation
		if _, ok := g.Held("d"); ok {
			t.Fatal("hold survived a newer render")
		}
		if _, ok := g.Next(); ok {
			t.Fatal("a cleared hold is still due")
		}
	})
}

func TestGuardHoldKeepsItsStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := NewGuard(0.5, 10*time.Second)
		start := time.Now()
		for i := range 20 {
			g.Judge("d", Counts{"a": 4}, Counts{"a": 0}, render(string(rune('a'+i))), time.Now())
			time.Sleep(time.Second)
		}
		h, _ := g.Held("d")
		if !h.Since.Equal(start) {
			t.Fatal("a stream of renders reset the hold's start")
		}
	})
}

func TestGuardOffAndHarmlessRenders(t *testing.T) {
	g := NewGuard(0, time.Second)
	if hold, _ := g.Judge("d", Counts{"a": 3}, Counts{}, render("x"), time.Now()); hold {
		t.Fatal("guard off held")
	}
	g = NewGuard(0.5, time.Second)
	if hold, _ := g.Judge("d", Counts{"a": 3}, Counts{"a": 2}, render("x"), time.Now()); hold {
		t.Fatal("removing 1 of 3 held")
	}
}

func TestSuspicious(t *testing.T) {
	for _, c := range []struct {
		before, after Counts
		want          bool
	}{
		{Counts{"a": 4}, Counts{"a": 2}, false},
		{Counts{"a": 4}, Counts{"a": 1}, true},
		{Counts{"a": 4, "b": 1}, Counts{"a": 4, "b": 0}, true},
		{Counts{"a": 4, "b": 1}, Counts{"a": 4}, true},
		{Counts{}, Counts{"a": 1}, false},
	} {
		if got, _ := Suspicious(c.before, c.after, 0.5); got != c.want {
			t.Errorf("%v -> %v: %v", c.before, c.after, got)
		}
	}
}
