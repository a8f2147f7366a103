package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// killMasterAndRestart kills the master of a supervised proxy with
// SIGKILL and checks what the supervisor relies on: Exited closes within a
// second whatever the workers do, no process of the old generation is left
// (they would hold the ports), and Start brings the proxy back on addr.
func killMasterAndRestart(t *testing.T, p supervisedProxy, s *supervised, addr, want string) {
	t.Helper()
	exited := s.Exited()
	if exited == nil {
		t.Fatal("Exited() is nil for a started supervised proxy")
	}
	master := s.child.pid()
	workers := children(master)
	if len(workers) == 0 {
		t.Fatalf("master %d has no workers before the kill", master)
	}
	for w := range workers {
		if !alive(w) {
			t.Fatalf("worker %d not alive before the kill", w)
		}
	}
	if err := syscall.Kill(master, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	select {
	case <-exited:
		t.Logf("Exited closed %s after kill -9 of master %d (workers %v)", time.Since(killed).Round(time.Millisecond), master, workers)
	case <-time.After(time.Second):
		t.Fatalf("Exited not closed 1s after kill -9 of master %d; workers %v alive: %v", master, workers, liveOnes(workers))
	}
	if left := liveOnes(workers); len(left) > 0 {
		t.Errorf("workers of the killed generation still alive after Exited: %v", left)
	}
	if left := groupMembers(master); len(left) > 0 {
		t.Errorf("process group %d still has live members after Exited: %v", master, left)
	}
	if s.Exited() != exited {
		t.Error("Exited() changed before Start ran again")
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatalf("Start after the kill: %v", err)
	}
	if s.Exited() == exited {
		t.Error("Exited() still returns the old child's channel after Start")
	}
	testenv.Eventually(t, 5*time.Second, serves(addr, want))
}

func liveOnes(pids map[int]bool) []int {
	var out []int
	for p := range pids {
		if alive(p) {
			out = append(out, p)
		}
	}
	return out
}

func TestNginxSuperviseMasterKilled(t *testing.T) {
	bin := testenv.NginxBinary(t)
	prefix, conf, addr := confIn(t, "nginx.conf")
	write(t, conf, nginxConf(addr, "A"))
	n := &Nginx{Bin: bin, Prefix: prefix, Config: conf, Supervise: true, Timeout: 5 * time.Second, Log: slog.New(slog.DiscardHandler)}
	startServing(t, n, conf, addr, "A")
	killMasterAndRestart(t, n, &n.supervised, addr, "A")
	// The new generation is a working one: it reloads.
	reloadServes(t, n, conf, nginxConf(addr, "B"), addr, "B")
}

// HAProxy 2.6 workers exit on their own when the master dies; the check is
// the same either way.
func TestHAProxySuperviseMasterKilled(t *testing.T) {
	bin := testenv.HAProxyBinary(t)
	_, conf, addr := confIn(t, "haproxy.cfg")
	write(t, conf, haproxyConf(addr, "A"))
	h := &HAProxy{Bin: bin, Config: conf, Supervise: true, Timeout: 5 * time.Second, Log: slog.New(slog.DiscardHandler)}
	startServing(t, h, conf, addr, "A")
	killMasterAndRestart(t, h, &h.supervised, addr, "A")
	reloadServes(t, h, conf, haproxyConf(addr, "B"), addr, "B")
}

// A failed start leaves a closed Exited, not nil: nil would tell the
// supervisor the proxy is not its child, and it would never retry. Its
// error quotes what the proxy said, so the operator reads why.
func TestSupervisedFailedStartExitedClosed(t *testing.T) {
	bin := testenv.NginxBinary(t)
	prefix, conf, _ := confIn(t, "nginx.conf")
	busy := holdPort(t)
	write(t, conf, nginxConf(busy, "A"))
	n := &Nginx{Bin: bin, Prefix: prefix, Config: conf, Supervise: true, Timeout: 2 * time.Second, Log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	err := n.Start(ctx)
	if err == nil {
		n.Stop(ctx)
		t.Fatal("Start on a busy port succeeded")
	}
	if !strings.Contains(err.Error(), "bind() to "+busy+" failed") {
		t.Errorf("Start = %v, want nginx's own words on the busy port", err)
	}
	ch := n.Exited()
	if ch == nil {
		t.Fatal("Exited() is nil after a failed Start")
	}
	select {
	case <-ch:
	default:
		t.Fatal("Exited() not closed after a failed Start")
	}
	var nr interface{ NotRunning() bool }
	if err := n.Reload(ctx); !errors.As(err, &nr) {
		t.Fatalf("Reload after a failed Start = %v, want a not-running error", err)
	}
}

// Every process Start records must be forgotten after Wait, or the set
// grows forever and a reused pid hides an orphan from ReapOrphans.
func TestSpawnedPIDsForgotten(t *testing.T) {
	ctx := context.Background()
	base := spawned()
	for i := 0; i < 10; i++ {
		_ = Command{Line: "true"}.Validate(ctx, "x")
		_ = Command{Line: "exit 3"}.Validate(ctx, "x")
	}
	if n := spawned(); n != base {
		t.Fatalf("after 20 validator runs %d pids are still recorded (was %d)", n, base)
	}
	// A binary that cannot start records nothing.
	if _, err := run(ctx, time.Second, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("running a missing binary succeeded")
	}
	if n := spawned(); n != base {
		t.Fatalf("a failed start left %d pids recorded (was %d)", n, base)
	}
	// A supervised child is forgotten once it has exited.
	c, err := startChild(slog.New(slog.DiscardHandler), "sleep", syscall.SIGTERM, "sleep", "30")
	if err != nil {
		t.Fatal(err)
	}
	if spawned() != base+1 {
		t.Fatalf("running child not recorded")
	}
	if err := c.stop(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	if n := spawned(); n != base {
		t.Fatalf("after the child stopped %d pids are still recorded (was %d)", n, base)
	}
	if base != 0 {
		t.Errorf("%d pids recorded before the test: an earlier test leaked them", base)
	}
}

// A child whose output pipe is held by a grandchild that ignores our
// signals: the exit is still seen at once, and the grandchild, left in the
// group, is killed before done closes.
func TestChildExitNotGatedByPipe(t *testing.T) {
	_, err := exec.LookPath("sh")
	testenv.Need(t, err == nil, "a POSIX sh")
	c, err := startChild(slog.New(slog.DiscardHandler), "sh", syscall.SIGTERM, "sh", "-c", "trap '' TERM; (trap '' TERM; sleep 30) & echo started; exec sleep 30")
	if err != nil {
		t.Fatal(err)
	}
	var kids map[int]bool
	testenv.Eventually(t, 2*time.Second, func() error {
		if kids = groupMembers(c.pid()); len(kids) < 2 {
			return fmt.Errorf("group %d: %v", c.pid(), kids)
		}
		return nil
	})
	_ = syscall.Kill(c.pid(), syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(time.Second + orphanGrace + killWait):
		t.Fatal("done not closed after the child was killed")
	}
	if left := groupMembers(c.pid()); len(left) > 0 {
		t.Fatalf("group members left: %v (were %v)", left, kids)
	}
	select {
	case <-c.logs:
	case <-time.After(time.Second):
		t.Fatal("log reader did not see EOF once the group was gone")
	}
}

// unixListen listens on a unix socket at path.
func unixListen(t *testing.T, path string) *net.UnixListener {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Stop right after a failed reload: the master re-executes into wait mode
// then, and loses a SIGUSR1 sent in that moment. Stop must still end the
// proxy gracefully, not sit out StopGrace and kill it.
func TestHAProxyStopAfterFailedReload(t *testing.T) {
	bin := testenv.HAProxyBinary(t)
	_, conf, addr := confIn(t, "haproxy.cfg")
	write(t, conf, haproxyConf(addr, "A"))
	h := &HAProxy{Bin: bin, Config: conf, Supervise: true, Timeout: 2 * time.Second, Log: slog.New(slog.DiscardHandler)}
	startServing(t, h, conf, addr, "A")
	busy := holdPort(t)
	reloadFails(t, h, conf, haproxyConf(addr, "C", "frontend busy\n    bind "+busy+"\n    http-request return status 200"), addr, "A")
	start := time.Now()
	if err := h.Stop(context.Background()); err != nil {
		t.Fatalf("Stop after %s: %v", time.Since(start).Round(time.Millisecond), err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Stop took %s", took)
	}
}
