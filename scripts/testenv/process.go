package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Process is one of our daemons run as a real child process, its output
// captured to a log file that is printed when the test fails.
type Process struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string
	done    chan struct{}
}

// StartProcess runs bin with args and extra environment; at cleanup it is
// sent SIGTERM, then SIGKILL after 10s.
func StartProcess(t testing.TB, name, bin string, args []string, env ...string) *Process {
	t.Helper()
	p := &Process{Name: name, LogPath: filepath.Join(t.TempDir(), name+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	p.Cmd = exec.Command(bin, args...)
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.Stdout, p.Cmd.Stderr = logf, logf
	// Own process group, so a kill reaches the proxy the renderer supervises;
	// Pdeathsig so nothing outlives a crashed test binary.
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.Cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.Cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", name, tail([]byte(p.Log()), 6000))
		}
	})
	return p
}

// Log returns what the process has written so far.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error { return p.Cmd.Process.Signal(sig) }

// KillGroup sends SIGKILL to the process and every child in its group: a
// host dying, for disaster-recovery tests.
func (p *Process) KillGroup() {
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Wait waits up to timeout for the process to exit and returns its exit
// code, or an error if it is still running.
func (p *Process) Wait(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode(), nil
	case <-time.After(timeout):
		return -1, fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits up to grace, then kills the whole group.
func (p *Process) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	if _, err := p.Wait(grace); err != nil {
		p.KillGroup()
	}
}

// WaitLog waits until the process log contains substr.
func (p *Process) WaitLog(t testing.TB, timeout time.Duration, substr string) {
	t.Helper()
	Eventually(t, timeout, func() error {
		if strings.Contains(p.Log(), substr) {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%s exited before logging %q", p.Name, substr)
		}
		return fmt.Errorf("%s has not logged %q yet", p.Name, substr)
	})
}

// KillTree is a host dying: it freezes the process's group, then sends
// SIGKILL to the process groups of its children (a supervised proxy runs in
// a group of its own, which KillGroup does not reach) and to its own group,
// and waits until none of those processes is left, so their ports are free
// again. Only groups led by the process's own children are touched.
func (p *Process) KillTree(t testing.TB) {
	t.Helper()
	pid := p.Cmd.Process.Pid
	// SIGSTOP first: a stopped process forks no new child between the
	// listing and the kill.
	_ = syscall.Kill(-pid, syscall.SIGSTOP)
	groups := map[int]bool{pid: true}
	for _, c := range Procs() {
		if c.PPID == pid && c.PGrp > 1 && c.PGrp != syscall.Getpgrp() {
			groups[c.PGrp] = true
		}
	}
	for g := range groups {
		_ = syscall.Kill(-g, syscall.SIGKILL)
	}
	<-p.done
	Eventually(t, 10*time.Second, func() error {
		for _, c := range Procs() {
			if groups[c.PGrp] && c.State != 'Z' {
				return fmt.Errorf("pid %d (group %d) still alive after SIGKILL", c.PID, c.PGrp)
			}
		}
		return nil
	})
}

// Proc is one line of the process table.
type Proc struct {
	PID, PPID, PGrp int
	State           byte   // 'R', 'S', 'Z', ...
	Comm            string // the command name, as /proc/PID/stat has it
}

// Procs reads /proc; processes that vanish while we read are skipped.
func Procs() []Proc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

func readProc(pid int) (Proc, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return Proc{}, false
	}
	// The command name is in parentheses and may contain spaces and ')'.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return Proc{}, false
	}
	f := bytes.Fields(b[end+1:])
	if len(f) < 3 || len(f[0]) == 0 {
		return Proc{}, false
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgrp, err2 := strconv.Atoi(string(f[2]))
	if err1 != nil || err2 != nil {
		return Proc{}, false
	}
	return Proc{PID: pid, PPID: ppid, PGrp: pgrp, State: f[0][0], Comm: string(b[open+1 : end])}, true
}
