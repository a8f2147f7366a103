package main

import (
	"errors"
	"maps"
	"slices"
	"testing"
	"time"
)

func TestDrainLimit(t *testing.T) {
	nginx, haproxy := kindNamed("nginx"), kindNamed("haproxy")
	for _, tc := range []struct {
		kind *proxyKind
		conf string
		want time.Duration
		ok   bool
	}{
		{nginx, "pid nginx.pid;\nworker_shutdown_timeout 10s;\n", 10 * time.Second, true},
		{nginx, "  worker_shutdown_timeout 1500ms;", 1500 * time.Millisecond, true},
		{nginx, "worker_shutdown_timeout 3;", 3 * time.Second, true}, // nginx: seconds
		{nginx, "# worker_shutdown_timeout 10s;\n", 0, false},
		{nginx, "events {}\n", 0, false},
		{haproxy, "global\n    hard-stop-after 30s\n", 30 * time.Second, true},
		{haproxy, "global\n    hard-stop-after 2500\n", 2500 * time.Millisecond, true}, // HAProxy: ms
		{haproxy, "global\n    hard-stop-after 1m\n", time.Minute, true},
		{haproxy, "global\n    maxconn 10\n", 0, false},
	} {
		got, ok := tc.kind.drainLimit([]byte(tc.conf))
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s drainLimit(%q) = %s, %v; want %s, %v", tc.kind.name, tc.conf, got, ok, tc.want, tc.ok)
		}
	}
}

// The table HAProxy 2.6's master CLI printed here for "show proc".
const showProc = `#<PID>          <type>          <reloads>       <uptime>        <version>
31017           master          2 [failed: 0]   0d00h00m09s     2.6.12-1+deb12u4
# workers
31231           worker          0               0d00h00m03s     2.6.12-1+deb12u4
# old workers
31028           worker          1               0d00h00m04s     2.6.12-1+deb12u4
31100           worker          1               0d00h00m04s     2.6.12-1+deb12u4
# programs
`

func TestParseShowProc(t *testing.T) {
	master, cur := parseShowProc(showProc)
	if master != 31017 {
		t.Errorf("master %d, want 31017", master)
	}
	if got := slices.Sorted(maps.Keys(cur)); !slices.Equal(got, []int{31231}) {
		t.Errorf("current workers %v, want [31231] (not the old ones)", got)
	}
}

func TestObserverSummary(t *testing.T) {
	set := func(pids ...int) map[int]bool {
		m := map[int]bool{}
		for _, p := range pids {
			m[p] = true
		}
		return m
	}
	o := &observer{}
	o.record(workers{all: set(1, 2, 9), cur: set(1, 2), curKnown: true}, nil)             // 9: left from an earlier phase
	o.record(workers{}, errors.New("master CLI refused"))                                 // a master re-executing
	o.record(workers{all: set(1, 2, 3, 4, 9)}, nil)                                       // it could not tell the current ones
	o.record(workers{all: set(1, 2, 3, 4, 9), cur: set(1, 2, 3, 4), curKnown: true}, nil) // mid-reload: 1, 2 not retitled yet
	o.record(workers{all: set(3, 4, 5, 6), cur: set(5), curKnown: true}, nil)             // mid-reload: 6 not titled yet
	o.record(workers{all: set(3, 4, 5, 6), cur: set(5, 6), curKnown: true}, nil)
	spawned, perGen, old := o.summary()
	if spawned != 4 || perGen != 2 {
		t.Errorf("spawned %d per generation %d, want 4 and 2", spawned, perGen)
	}
	if got := slices.Sorted(maps.Keys(old)); !slices.Equal(got, []int{1, 2, 3, 4, 9}) {
		t.Errorf("old at the end %v, want [1 2 3 4 9]", got)
	}
	if o.polls != 5 || o.lastErr == nil {
		t.Errorf("polls %d, last error %v: want 5 and the refusal", o.polls, o.lastErr)
	}
}

func TestPct(t *testing.T) {
	d := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	if got := pct(d, 50); got != 5 {
		t.Errorf("p50 = %d, want 5", got)
	}
	if got := pct(d, 90); got != 9 {
		t.Errorf("p90 = %d, want 9", got)
	}
	if got := pct(nil, 50); got != -1 {
		t.Errorf("p50 of nothing = %d, want -1 (unknown)", got)
	}
}
