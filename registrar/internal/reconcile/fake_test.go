package reconcile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/switchyard/switchyard/registrar/internal/container"
	"github.com/switchyard/switchyard/registrar/internal/service"
)

// fakeDocker is an in-memory ContainerSource. Tests change containers and
// send hints through events, as Docker would.
type fakeDocker struct {
	mu         sync.Mutex
	containers map[string]container.Container
	inspects   map[string]int
	failList   error
	failInsp   map[string]error
	// hang makes an inspect block: a nil channel until its context is
	// done (a hung engine), a channel until it is closed, whatever the
	// context (a call that ignores its deadline).
	hang   map[string]chan struct{}
	events chan container.Event
}

func newFakeDocker() *fakeDocker {
	return &fakeDocker{
		containers: map[string]container.Container{},
		inspects:   map[string]int{},
		failInsp:   map[string]error{},
		hang:       map[string]chan struct{}{},
		events:     make(chan container.Event, 100),
	}
}

func (f *fakeDocker) List(ctx context.Context) ([]container.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failList != nil {
		return nil, f.failList
	}
	var out []container.Summary
	for _, id := range slices.Sorted(maps.Keys(f.containers)) {
		out = append(out, container.Summary{ID: id, Running: f.containers[id].State.Running})
	}
	return out, nil
}

func (f *fakeDocker) Inspect(ctx context.Context, id string) (container.Container, error) {
	f.mu.Lock()
	f.inspects[id]++
	release, hung := f.hang[id]
	f.mu.Unlock()
	if hung && release == nil {
		<-ctx.Done()
		return container.Container{}, fmt.Errorf("inspect %s: %w", id, ctx.Err())
	}
	if hung {
		<-release
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failInsp[id]; err != nil {
		return container.Container{}, err
	}
	c, ok := f.containers[id]
	if !ok {
		return container.Container{}, fmt.Errorf("inspect %s: %w", id, container.ErrNotFound)
	}
	return c, nil
}

func (f *fakeDocker) Watch(ctx context.Context, out chan<- container.Event) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-f.events:
			select {
			case out <- ev:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

func (f *fakeDocker) set(c container.Container) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[c.ID] = c
}

func (f *fakeDocker) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.containers, id)
}

func (f *fakeDocker) setHang(id string, release chan struct{}, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on {
		f.hang[id] = release
	} else {
		delete(f.hang, id)
	}
}

func (f *fakeDocker) setFailInspect(id string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.failInsp[id] = err
	} else {
		delete(f.failInsp, id)
	}
}

func (f *fakeDocker) inspectCount(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inspects[id]
}

// fakeConsul is an in-memory agent: it holds services of every owner and
// answers Owned with ours only, like the meta filter does.
type fakeConsul struct {
	mu       sync.Mutex
	node     string
	services map[string]service.Service
	writes   int
	fail     error // every write fails while set
	// failMaint fails maintenance changes only (the agent erring on one
	// endpoint, or answering again only after the call).
	failMaint  error
	maintCalls int
	reject     map[string]bool
	maint      map[string]bool   // service ID -> in maintenance
	checks     map[string]string // service ID -> Docker check status last set
	ttlSets    int               // UpdateDockerCheck calls
}

func newFakeConsul(node string) *fakeConsul {
	return &fakeConsul{node: node, services: map[string]service.Service{}, reject: map[string]bool{}, maint: map[string]bool{}, checks: map[string]string{}}
}

type rejectedErr struct{}

func (rejectedErr) Error() string  { return "400 bad request" }
func (rejectedErr) Rejected() bool { return true }

var errDown = errors.New("connection refused")

// notOwnedErr is what the consul adapter answers for a service ID held by
// someone else.
type notOwnedErr struct{ holder string }

func (e notOwnedErr) Error() string  { return "service ID held by " + e.holder }
func (notOwnedErr) NotOwned() bool   { return true }
func (e notOwnedErr) Holder() string { return e.holder }

// foreign returns the error for touching id when someone else holds it.
func (f *fakeConsul) foreign(id string) error {
	if s, ok := f.services[id]; ok && s.Meta[service.MetaNode] != f.node {
		return notOwnedErr{s.Meta[service.MetaNode]}
	}
	return nil
}

func (f *fakeConsul) Owned(ctx context.Context) ([]service.Registration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	var out []service.Registration
	for _, s := range f.services {
		if s.Meta[service.MetaNode] == f.node {
			out = append(out, service.Registration{ID: s.ID, ContainerID: s.Meta[service.MetaContainerID], Fingerprint: s.Meta[service.MetaFingerprint]})
		}
	}
	return out, nil
}

func (f *fakeConsul) Register(ctx context.Context, s service.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if f.fail != nil {
		return f.fail
	}
	if f.reject[s.ID] {
		return rejectedErr{}
	}
	if err := f.foreign(s.ID); err != nil {
		return err
	}
	s.Meta = maps.Clone(s.Meta)
	s.Meta[service.MetaFingerprint] = s.Fingerprint()
	f.services[s.ID] = s
	return nil
}

func (f *fakeConsul) Deregister(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if f.fail != nil {
		return f.fail
	}
	if err := f.foreign(id); err != nil {
		return err
	}
	delete(f.services, id)
	delete(f.maint, id) // the agent drops a service's maintenance with it
	return nil
}

func (f *fakeConsul) UpdateDockerCheck(ctx context.Context, s service.Service) error {
	ch, ok := s.DockerCheck()
	if !ok {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.ttlSets++
	f.checks[s.ID] = ch.Status
	return nil
}

func (f *fakeConsul) Maintenance(ctx context.Context, id string, on bool, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maintCalls++
	if f.fail != nil {
		return f.fail
	}
	if f.failMaint != nil {
		return f.failMaint
	}
	if _, ok := f.services[id]; !ok {
		return nil
	}
	if on {
		f.maint[id] = true
	} else {
		delete(f.maint, id)
	}
	return nil
}

func (f *fakeConsul) inMaint(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maint[id]
}

func (f *fakeConsul) checkStatus(id string) (string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.checks[id], f.ttlSets
}

func (f *fakeConsul) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.services))
}

func (f *fakeConsul) get(id string) (service.Service, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[id]
	return s, ok
}

func (f *fakeConsul) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

func (f *fakeConsul) writeCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}

func (f *fakeConsul) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.services, id)
}

// wipe is an agent restarted without its state: services and their
// maintenance are gone.
func (f *fakeConsul) wipe() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.services)
	clear(f.maint)
}

func (f *fakeConsul) setFailMaint(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failMaint = err
}

func (f *fakeConsul) maintCallCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maintCalls
}
