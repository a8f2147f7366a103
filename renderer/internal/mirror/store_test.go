package mirror

import (
	"testing"
	"time"
)

// TestTrackedEntries: an answer read inline has no blocking query waiting
// on it, yet it must be kept (never swept), polled when no watch covers
// it, and its changes, and only they, must move the inline generation.
func TestTrackedEntries(t *testing.T) {
	s := newStore()
	now := time.Now()
	web := route{kind: kindService, service: "web", key: "/v1/health/service/web"}
	api := route{kind: kindService, service: "api", key: "/v1/health/service/api"}
	far := route{kind: kindPoll, key: "/v1/health/service/web?dc=dc2"}
	for _, rt := range []route{web, api, far} {
		s.insert(rt, &response{status: 200, body: []byte("a")}, 0, now)
	}
	s.track(web.key)
	s.track(far.key)
	gen, moved := s.inline()

	s.update(api.key, &response{status: 200, body: []byte("b")})
	s.update(web.key, &response{status: 200, body: []byte("a")}) // same bytes
	if g, _ := s.inline(); g != gen {
		t.Fatalf("generation moved from %d to %d without a tracked answer changing", gen, g)
	}
	s.update(web.key, &response{status: 200, body: []byte("b")})
	select {
	case <-moved:
	default:
		t.Fatal("a tracked answer changed and the generation's channel stayed open")
	}
	if g, _ := s.inline(); g != gen+1 {
		t.Fatalf("generation %d after a tracked change, want %d", g, gen+1)
	}

	if n := s.markKind(kindPoll); n != 1 {
		t.Fatalf("%d poll answers queued, want the tracked one", n)
	}
	if n := s.sweep(now.Add(time.Hour), time.Minute); n != 1 || s.entries[api.key] != nil {
		t.Fatalf("sweep dropped %d answers; want only the untracked one", n)
	}
	s.untrack([]string{web.key, far.key})
	if n := s.sweep(now.Add(time.Hour), time.Minute); n != 2 {
		t.Fatalf("sweep dropped %d answers once untracked, want 2", n)
	}
}
