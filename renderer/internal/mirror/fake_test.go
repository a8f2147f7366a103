package mirror

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// fakeConsul is an agent in memory, enough of one for the mirror: the node
// dump and health/service with blocking queries, status/leader. It is a
// RoundTripper, so tests run in a synctest bubble with no sockets.
type fakeConsul struct {
	mu       sync.Mutex
	index    uint64
	services map[string]fakeService
	changed  chan struct{} // closed on every write
	dead     chan struct{} // closed while the agent is down
	requests map[string]int
	latency  time.Duration // how long a health/service answer takes
	// dumpLatency is how long a dump request takes before the agent
	// reads its state (a real one takes a few ms to reach).
	dumpLatency time.Duration
}

type fakeService struct {
	addrs []string
	index uint64
}

func newFakeConsul() *fakeConsul {
	return &fakeConsul{index: 10, services: map[string]fakeService{}, changed: make(chan struct{}),
		requests: map[string]int{}, dead: nil}
}

// set writes a service's addresses (nil removes it) at the next index.
func (f *fakeConsul) set(name string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	if addrs == nil {
		delete(f.services, name)
	} else {
		f.services[name] = fakeService{addrs: addrs, index: f.index}
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

// restart loses the agent's raft history: indexes start low again.
func (f *fakeConsul) restart(index uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index = index
	for n, s := range f.services {
		s.index = index
		f.services[n] = s
	}
	f.dead = nil
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeConsul) down() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dead == nil {
		f.dead = make(chan struct{})
		close(f.dead)
	}
}

func (f *fakeConsul) up() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dead = nil
}

// count is the number of requests for path (query ignored).
func (f *fakeConsul) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[path]
}

var errFakeDown = errors.New("dial tcp 127.0.0.1:8500: connect: connection refused")

func (f *fakeConsul) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.requests[req.URL.Path]++
	dead := f.dead
	f.mu.Unlock()
	if dead != nil {
		return nil, errFakeDown
	}
	f.mu.Lock()
	var d time.Duration
	switch {
	case strings.HasPrefix(req.URL.Path, "/v1/health/service/"):
		d = f.latency
	case req.URL.Path+"?stale=" == dumpPath:
		d = f.dumpLatency
	}
	f.mu.Unlock()
	time.Sleep(d) // virtual time: the tests run in a synctest bubble
	rec := httptest.NewRecorder()
	if err := f.serve(rec, req); err != nil {
		return nil, err
	}
	return rec.Result(), nil
}

func (f *fakeConsul) serve(w http.ResponseWriter, req *http.Request) error {
	p := req.URL.Path
	switch {
	case p == "/v1/status/leader":
		w.Write([]byte(`"127.0.0.1:8300"`))
		return nil
	case p+"?stale=" == dumpPath:
		return f.block(w, req, func() (uint64, any) { return f.index, f.dumpLocked() })
	case strings.HasPrefix(p, "/v1/health/service/"):
		name := strings.TrimPrefix(p, "/v1/health/service/")
		return f.block(w, req, func() (uint64, any) {
			s, ok := f.services[name]
			if !ok {
				return f.index, []any{}
			}
			return s.index, s.addrs
		})
	}
	http.NotFound(w, req)
	return nil
}

// block answers like Consul: at once without an index, else when the
// answer's index passes it, the wait elapses, or the agent dies.
func (f *fakeConsul) block(w http.ResponseWriter, req *http.Request, read func() (uint64, any)) error {
	q := req.URL.Query()
	min, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	wait, _ := time.ParseDuration(q.Get("wait"))
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		f.mu.Lock()
		idx, v := read()
		ch, dead := f.changed, f.dead
		f.mu.Unlock()
		if dead != nil {
			return errFakeDown
		}
		if min == 0 || idx != min { // a lower index (restart) answers at once too
			w.Header().Set("X-Consul-Index", strconv.FormatUint(idx, 10))
			return json.NewEncoder(w).Encode(v)
		}
		select {
		case <-ch:
		case <-timer.C:
			min = 0
		case <-req.Context().Done():
			return req.Context().Err()
		}
	}
}

func (f *fakeConsul) dumpLocked() []map[string]any {
	var svcs []map[string]any
	for name, s := range f.services {
		svcs = append(svcs, map[string]any{"ID": name + "-1", "Service": name, "Address": s.addrs, "ModifyIndex": s.index})
	}
	return []map[string]any{{"Node": "n1", "Address": "127.0.0.1", "Services": svcs, "Checks": []any{}}}
}

// kill makes the agent refuse everything and wakes its blocked queries.
func (f *fakeConsul) kill() {
	f.down()
	f.mu.Lock()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func (f *fakeConsul) String() string { return fmt.Sprintf("fake consul at %d", f.index) }
