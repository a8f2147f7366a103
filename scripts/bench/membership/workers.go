package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/renderer/haproxyproc"
)

// workers is a proxy's worker processes at one moment: all of them (the
// master's children, from the process table, which always answers) and,
// when the proxy could tell (curKnown), which are the current generation.
type workers struct {
	all, cur map[int]bool
	curKnown bool
}

// workerLister lists a proxy's workers now.
type workerLister func(ctx context.Context) (workers, error)

// children returns the pids of master's children named comm.
func children(master int, comm string) (map[int]bool, error) {
	m := strconv.Itoa(master)
	b, err := os.ReadFile(filepath.Join("/proc", m, "task", m, "children"))
	if err != nil {
		return nil, fmt.Errorf("children of %s master %d: %w", comm, master, err)
	}
	out := map[int]bool{}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && alive(pid, comm) {
			out[pid] = true
		}
	}
	return out, nil
}

// nginxWorkers lists the workers of the nginx master whose pid file is
// in prefix: nginx titles a worker "nginx: worker process" and, once a
// reload retired it, "... is shutting down".
func nginxWorkers(prefix string) workerLister {
	return func(context.Context) (workers, error) {
		b, err := os.ReadFile(filepath.Join(prefix, "nginx.pid"))
		if err != nil {
			return workers{}, err
		}
		master, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		all, err := children(master, "nginx")
		if err != nil {
			return workers{}, err
		}
		w := workers{all: map[int]bool{}, cur: map[int]bool{}, curKnown: true}
		for pid := range all {
			title := string(cmdline(pid))
			if !strings.Contains(title, "worker process") {
				continue // a cache manager, say
			}
			w.all[pid] = true
			if !strings.Contains(title, "is shutting down") {
				w.cur[pid] = true
			}
		}
		return w, nil
	}
}

// haproxyWorkers lists the children of the HAProxy master whose CLI is at
// socket, and asks that CLI ("show proc") which one is current. The
// master refuses its CLI while it re-executes for a reload, which under
// frequent reloads is most of the time: the process table still lists
// every worker, and a poll whose CLI question failed says so.
func haproxyWorkers(socket string) workerLister {
	var master int // the master keeps its pid across reloads
	return func(ctx context.Context) (workers, error) {
		out, cliErr := masterCLI(ctx, socket, "show proc")
		var cur map[int]bool
		if cliErr == nil {
			var m int
			if m, cur = parseShowProc(out); m != 0 {
				master = m
			}
		}
		if master == 0 {
			return workers{}, errors.Join(errors.New("haproxy master pid unknown yet"), cliErr)
		}
		all, err := children(master, "haproxy")
		if err != nil {
			return workers{}, err
		}
		return workers{all: all, cur: cur, curKnown: len(cur) > 0}, nil
	}
}

// parseShowProc reads HAProxy's "show proc" table with the renderer's
// parser (haproxyproc), so the benchmark counts as current the workers the
// renderer's reload verification counts: the master's pid, and the
// current workers (not the retired ones).
func parseShowProc(out string) (master int, cur map[int]bool) {
	t := haproxyproc.Parse(out)
	return t.Master, t.Workers
}

// masterCLI sends one command to an HAProxy master CLI and reads the
// answer until the master closes the connection, within 500ms.
func masterCLI(ctx context.Context, socket, cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return "", fmt.Errorf("haproxy master CLI %s: %w", socket, err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return "", fmt.Errorf("haproxy master CLI %s: %s: %w", socket, cmd, err)
	}
	// Half-close: the master answers and closes once it has read the
	// whole request.
	if uc, ok := conn.(*net.UnixConn); ok {
		_ = uc.CloseWrite()
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return "", fmt.Errorf("haproxy master CLI %s: %s: %w", socket, cmd, err)
	}
	return string(b), nil
}

// observer polls a proxy's workers during a phase.
type observer struct {
	mu      sync.Mutex
	first   map[int]bool // every worker at the first poll
	seen    map[int]bool // every worker any poll saw
	lastCur map[int]bool // the current generation at the last poll that knew it
	sizes   map[int]int  // how many polls saw n current workers
	polls   int
	lastErr error
}

// watch polls list every interval until stop is closed.
func (o *observer) watch(list workerLister, every time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		o.poll(list)
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func (o *observer) poll(list workerLister) workers {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	w, err := list(ctx)
	o.record(w, err)
	return w
}

// settle polls until the proxy tells its current generation (within
// limit), so the end of a phase does not take a retiring worker for
// the current one.
func (o *observer) settle(list workerLister, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for !o.poll(list).curKnown && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
}

func (o *observer) record(w workers, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		o.lastErr = err
		return
	}
	if o.seen == nil {
		o.first, o.seen, o.sizes = w.all, map[int]bool{}, map[int]int{}
	}
	o.polls++
	for pid := range w.all {
		o.seen[pid] = true
	}
	if w.curKnown {
		o.lastCur = w.cur
		o.sizes[len(w.cur)]++
	}
}

// summary returns the workers started during the phase, the size of one
// generation, and the workers that were not current at its end.
func (o *observer) summary() (spawned, perGen int, old map[int]bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	old = map[int]bool{}
	for pid := range o.seen {
		if !o.first[pid] {
			spawned++
		}
		if !o.lastCur[pid] {
			old[pid] = true
		}
	}
	return spawned, o.generation(), old
}

// generation is the number of current workers most polls saw: while
// nginx reloads, a poll may see old and new workers both titled current,
// or a new one not titled yet.
func (o *observer) generation() int {
	best := 0
	for n, polls := range o.sizes {
		if n > 0 && (polls > o.sizes[best] || polls == o.sizes[best] && n > best) {
			best = n
		}
	}
	return best
}

// oldLeft counts the pids of old that still run as comm.
func oldLeft(old map[int]bool, comm string) int {
	n := 0
	for pid := range old {
		if alive(pid, comm) {
			n++
		}
	}
	return n
}
