package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// proc is one process the bench started, in a process group of its own
// (so a kill reaches what it forked), its output in a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startProc runs args in dir. deathSig is what the kernel sends it if the
// bench dies without cleaning up: SIGTERM for a proxy master (it stops
// its workers), SIGKILL for the rest.
func startProc(name, dir string, env []string, deathSig syscall.Signal, args ...string) (*proc, error) {
	p := &proc{name: name, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig, waits up to grace, then kills the process group.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// sweep kills what this run started and is still alive after every
// process was stopped: processes whose command line names dir (a path
// unique to this run), their children, and the worker pids in known
// (nginx rewrites its workers' command lines, and a worker whose master
// was killed is reparented) while they still have the command name
// comm. It returns how many it found.
func sweep(dir string, known map[int]string) int {
	procs := testenv.Procs()
	kill := map[int]bool{}
	for _, p := range procs {
		if p.PID != os.Getpid() && p.State != 'Z' && bytes.Contains(cmdline(p.PID), []byte(dir)) {
			kill[p.PID] = true
		}
	}
	for _, p := range procs {
		if p.State != 'Z' && (kill[p.PPID] || (known[p.PID] != "" && known[p.PID] == p.Comm)) {
			kill[p.PID] = true
		}
	}
	for pid := range kill {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	_ = testenv.WaitFor(5*time.Second, func() error {
		for pid := range kill {
			if alive(pid, "") {
				return fmt.Errorf("pid %d still alive", pid)
			}
		}
		return nil
	})
	return len(kill)
}

func cmdline(pid int) []byte {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return b
}

// alive reports whether pid runs (not a zombie) with command name comm
// ("" = any name): a pid the kernel reused for another program is gone.
func alive(pid int, comm string) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open || end+2 >= len(b) {
		return false
	}
	if comm != "" && string(b[open+1:end]) != comm {
		return false
	}
	return b[end+2] != 'Z'
}
