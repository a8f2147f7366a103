package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/switchyard/switchyard/registrar/internal/container"
	"github.com/switchyard/switchyard/registrar/internal/reconcile"
	"github.com/switchyard/switchyard/registrar/internal/service"
	"github.com/switchyard/switchyard/scripts/testenv"
)

// metricsDocker is an in-memory reconcile.ContainerSource.
type metricsDocker struct {
	mu         sync.Mutex
	containers map[string]container.Container
	events     chan container.Event
}

func (f *metricsDocker) List(context.Context) ([]container.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []container.Summary
	for _, id := range slices.Sorted(maps.Keys(f.containers)) {
		out = append(out, container.Summary{ID: id, Running: f.containers[id].State.Running})
	}
	return out, nil
}

func (f *metricsDocker) Inspect(_ context.Context, id string) (container.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return container.Container{}, fmt.Errorf("inspect %s: %w", id, container.ErrNotFound)
	}
	return c, nil
}

func (f *metricsDocker) Watch(ctx context.Context, out chan<- container.Event) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-f.events:
			out <- ev
		}
	}
}

func (f *metricsDocker) set(c container.Container) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[c.ID] = c
}

func (f *metricsDocker) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.containers, id)
}

// rejectedErr is Consul refusing one service (a 4xx): retried for its
// container alone, no full resync.
type rejectedErr struct{}

func (rejectedErr) Error() string  { return "400 bad request" }
func (rejectedErr) Rejected() bool { return true }

type heldErr struct{}

func (heldErr) Error() string  { return "service ID held by someone else" }
func (heldErr) NotOwned() bool { return true }
func (heldErr) Holder() string { return "" }

// metricsConsul is an in-memory reconcile.Catalog: held IDs are refused,
// and the first failRegisters registrations are rejected.
type metricsConsul struct {
	mu            sync.Mutex
	services      map[string]service.Service
	held          map[string]bool
	failRegisters int
}

func (f *metricsConsul) Owned(context.Context) ([]service.Registration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []service.Registration
	for id, s := range f.services {
		out = append(out, service.Registration{ID: id, ContainerID: s.ContainerID, Fingerprint: s.Fingerprint()})
	}
	return out, nil
}

func (f *metricsConsul) Register(_ context.Context, s service.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.held[s.ID]:
		return heldErr{}
	case f.failRegisters > 0:
		f.failRegisters--
		return rejectedErr{}
	}
	f.services[s.ID] = s
	return nil
}

func (f *metricsConsul) Deregister(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.services, id)
	return nil
}

func (f *metricsConsul) UpdateDockerCheck(context.Context, service.Service) error { return nil }
func (f *metricsConsul) Maintenance(context.Context, string, bool, string) error  { return nil }

func (f *metricsConsul) setFailRegisters(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failRegisters = n
}

func metricsCtr(id string, port int, labels map[string]string) container.Container {
	return container.Container{
		ID: id, Name: "c-" + id, Image: "webapp:1", Labels: labels,
		State:       container.State{Running: true},
		NetworkMode: "bridge",
		Ports:       []container.Port{{Port: 8080, Proto: "tcp", Bindings: []container.Binding{{HostIP: "127.0.0.1", HostPort: port}}}},
	}
}

// scrape GETs /metrics and parses it as Prometheus text.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := fetchMetrics(url)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func fetchMetrics(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s: %s", resp.Status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return nil, fmt.Errorf("/metrics does not parse: %w\n%s", err, body)
	}
	return fams, nil
}

// sample is the value of family name's sample whose labels are labels
// (name=value pairs); ok false when there is none.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f, ok := fams[metricPrefix+name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		match := len(got) == len(labels)/2
		for i := 0; i+1 < len(labels); i += 2 {
			match = match && got[labels[i]] == labels[i+1]
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// waitSample scrapes until family name's sample with labels is want.
func waitSample(t *testing.T, url string, want float64, name string, labels ...string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		if got, ok := sample(scrape(t, url), name, labels...); !ok || got != want {
			return fmt.Errorf("%s%s%v = %v (present %t), want %v", metricPrefix, name, labels, got, ok, want)
		}
		return nil
	})
}

// /metrics serves every family with its type and labels, and counts what
// the reconcile loop does: events, resyncs, registrations and
// deregistrations by reason, Consul errors and retries, reconnects,
// refused takeovers, and the state gauges.
func TestMetricsCountLoopActivity(t *testing.T) {
	docker := &metricsDocker{containers: map[string]container.Container{}, events: make(chan container.Event, 16)}
	consul := &metricsConsul{services: map[string]service.Service{}, held: map[string]bool{}}
	const node = "n1"
	sid := func(id string) string { return node + ":c-" + id + ":8080" }
	docker.set(metricsCtr("a", 1001, map[string]string{"SERVICE_CHECK_TTL": "30s", "SERVICE_CHECK_INITIAL_STATUS": "passing"}))
	consul.held[sid("x")] = true

	status, err := listenStatus("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer status.l.Close()
	srv := httptest.NewServer(status.handler())
	defer srv.Close()

	// Before the reconciler exists, /metrics answers with the state gauges at 0.
	fams := scrape(t, srv.URL)
	if v, ok := sample(fams, "ready"); !ok || v != 0 {
		t.Fatalf("ready during start-up = %v (present %t), want 0", v, ok)
	}

	rec := reconcile.New(docker, consul, reconcile.Options{
		Policy: service.Policy{Node: node}, Debounce: time.Millisecond,
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		Recorder: status.recorder(),
	})
	status.setReconciler(rec)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- rec.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	// The start-up resync, then the stream connects: a resync, no reconnect.
	waitSample(t, srv.URL, 1, "registrations_total", "reason", "resync")
	waitSample(t, srv.URL, 1, "resyncs_total", "result", "ok")
	docker.events <- container.Event{Resync: true}
	waitSample(t, srv.URL, 2, "resyncs_total", "result", "ok")
	waitSample(t, srv.URL, 0, "event_stream_reconnects_total")
	waitSample(t, srv.URL, 1, "checks", "status", "passing") // a's TTL check

	// A container starts: its event registers it.
	docker.set(metricsCtr("b", 1002, nil))
	docker.events <- container.Event{ContainerID: "b", Type: "start"}
	waitSample(t, srv.URL, 1, "registrations_total", "reason", "event")

	// One asks for an ID someone else holds: refused, not retried.
	docker.set(metricsCtr("x", 1003, nil))
	docker.events <- container.Event{ContainerID: "x", Type: "start"}
	waitSample(t, srv.URL, 1, "takeovers_refused_total")

	// Consul fails a write: counted, retried, registered by the retry.
	consul.setFailRegisters(1)
	docker.set(metricsCtr("c", 1004, nil))
	docker.events <- container.Event{ContainerID: "c", Type: "start"}
	waitSample(t, srv.URL, 1, "registrations_total", "reason", "retry")
	waitSample(t, srv.URL, 1, "consul_errors_total")

	// b stops, a is removed.
	b := metricsCtr("b", 1002, nil)
	b.State = container.State{ExitCode: 0}
	docker.set(b)
	docker.events <- container.Event{ContainerID: "b", Type: "die"}
	waitSample(t, srv.URL, 1, "deregistrations_total", "reason", "stopped")
	docker.remove("a")
	docker.events <- container.Event{ContainerID: "a", Type: "destroy"}
	waitSample(t, srv.URL, 1, "deregistrations_total", "reason", "removed")

	// The stream reconnects: a second resync.
	docker.events <- container.Event{Resync: true}
	waitSample(t, srv.URL, 1, "event_stream_reconnects_total")
	waitSample(t, srv.URL, 3, "resyncs_total", "result", "ok")

	fams = scrape(t, srv.URL)
	// Family, type, labels and value of every one of ours.
	want := []struct {
		name   string
		typ    dto.MetricType
		labels []string
		value  float64
	}{
		{"ready", dto.MetricType_GAUGE, nil, 1},
		{"containers", dto.MetricType_GAUGE, nil, 3}, // b (stopped), c, x
		{"services", dto.MetricType_GAUGE, nil, 1},   // c
		{"retries_pending", dto.MetricType_GAUGE, nil, 0},
		{"draining", dto.MetricType_GAUGE, nil, 0},
		{"takeovers_refused_total", dto.MetricType_COUNTER, nil, 1},
		{"events_total", dto.MetricType_COUNTER, []string{"type", "start"}, 3},
		{"events_total", dto.MetricType_COUNTER, []string{"type", "die"}, 1},
		{"events_total", dto.MetricType_COUNTER, []string{"type", "destroy"}, 1},
		{"event_stream_reconnects_total", dto.MetricType_COUNTER, nil, 1},
		{"resyncs_total", dto.MetricType_COUNTER, []string{"result", "ok"}, 3},
		{"resyncs_total", dto.MetricType_COUNTER, []string{"result", "failed"}, 0},
		{"resync_duration_seconds", dto.MetricType_HISTOGRAM, nil, 3},
		{"registrations_total", dto.MetricType_COUNTER, []string{"reason", "resync"}, 1},
		{"registrations_total", dto.MetricType_COUNTER, []string{"reason", "event"}, 1},
		{"registrations_total", dto.MetricType_COUNTER, []string{"reason", "retry"}, 1},
		{"deregistrations_total", dto.MetricType_COUNTER, []string{"reason", "stopped"}, 1},
		{"deregistrations_total", dto.MetricType_COUNTER, []string{"reason", "removed"}, 1},
		{"deregistrations_total", dto.MetricType_COUNTER, []string{"reason", "unwanted"}, 0},
		{"deregistrations_total", dto.MetricType_COUNTER, []string{"reason", "shutdown"}, 0},
		{"consul_errors_total", dto.MetricType_COUNTER, nil, 1},
		{"checks", dto.MetricType_GAUGE, []string{"status", "passing"}, 0}, // a's check left with a
		{"checks", dto.MetricType_GAUGE, []string{"status", "critical"}, 0},
		{"checks", dto.MetricType_GAUGE, []string{"status", "unknown"}, 0},
	}
	for _, w := range want {
		f, ok := fams[metricPrefix+w.name]
		if !ok {
			t.Errorf("no family %s%s", metricPrefix, w.name)
			continue
		}
		if f.GetType() != w.typ {
			t.Errorf("%s%s is a %v, want %v", metricPrefix, w.name, f.GetType(), w.typ)
		}
		if v, ok := sample(fams, w.name, w.labels...); !ok || v != w.value {
			t.Errorf("%s%s%v = %v (present %t), want %v", metricPrefix, w.name, w.labels, v, ok, w.value)
		}
	}
	bi := fams[metricPrefix+"build_info"]
	if bi == nil || len(bi.GetMetric()) != 1 || bi.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Fatalf("build_info = %v, want one sample of 1", bi)
	}
	labels := map[string]string{}
	for _, l := range bi.GetMetric()[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] == "" || !strings.HasPrefix(labels["goversion"], "go") {
		t.Errorf("build_info labels %v, want version and goversion", labels)
	}
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		if _, ok := fams[name]; !ok && (name != "process_start_time_seconds" || runtime.GOOS == "linux") {
			t.Errorf("no family %s (Go and process collectors)", name)
		}
	}

	// On shutdown with --on-shutdown=deregister.
	cancel()
	<-done
	if err := rec.DeregisterAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitSample(t, srv.URL, 1, "deregistrations_total", "reason", "shutdown")
	done <- nil // for the deferred wait
}
