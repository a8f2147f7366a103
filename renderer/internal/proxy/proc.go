package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// spawnMu is held while we start a process and while the zombie reaper looks
// for orphans, so the reaper never steals the exit status of a child that
// exec.Cmd.Wait is about to collect.
var (
	spawnMu sync.Mutex
	ours    = map[int]bool{}
)

// Start starts cmd and records it as ours, so ReapOrphans leaves it alone.
// Every process the renderer spawns goes through here, and is waited for
// with Wait, which forgets it again: a pid left in the set would, once the
// kernel reuses it for an orphan, keep that orphan from ever being reaped.
func Start(cmd *exec.Cmd) error {
	spawnMu.Lock()
	defer spawnMu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	ours[cmd.Process.Pid] = true
	return nil
}

// Wait waits for a command started with Start, then forgets it.
func Wait(cmd *exec.Cmd) error {
	err := cmd.Wait()
	forget(cmd.Process.Pid)
	return err
}

// forget drops pid from the set of our children once cmd.Wait has
// returned: the pid is free for the kernel to reuse.
func forget(pid int) {
	spawnMu.Lock()
	delete(ours, pid)
	spawnMu.Unlock()
}

// spawned is how many processes Start recorded and nobody forgot yet.
func spawned() int {
	spawnMu.Lock()
	defer spawnMu.Unlock()
	return len(ours)
}

// ReapOrphans collects zombies that are not ours: as PID 1 in a container
// the renderer inherits every orphan (an nginx worker whose master died) and
// must wait for it, or the process table fills up. It returns how many it
// reaped.
func ReapOrphans() int {
	spawnMu.Lock()
	defer spawnMu.Unlock()
	n := 0
	self := os.Getpid()
	for _, p := range procs() {
		if p.ppid != self || p.state != 'Z' || ours[p.pid] {
			continue
		}
		var ws syscall.WaitStatus
		if got, err := syscall.Wait4(p.pid, &ws, syscall.WNOHANG, nil); err == nil && got == p.pid {
			n++
		}
	}
	return n
}

type procInfo struct {
	pid, ppid, pgrp int
	state           byte
}

// procs lists processes from /proc. Errors on single entries are ignored:
// processes come and go while we read.
func procs() []procInfo {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, err := readStat(pid)
		if err != nil {
			continue
		}
		out = append(out, p)
	}
	return out
}

func readStat(pid int) (procInfo, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procInfo{}, err
	}
	// The command name is in parentheses and may itself contain ") ",
	// so parse from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+4 >= len(b) {
		return procInfo{}, errors.New("short stat")
	}
	fields := bytes.Fields(b[i+1:])
	// state ppid pgrp ...
	if len(fields) < 3 {
		return procInfo{}, errors.New("short stat")
	}
	ppid, err := strconv.Atoi(string(fields[1]))
	if err != nil {
		return procInfo{}, fmt.Errorf("stat ppid: %w", err)
	}
	pgrp, err := strconv.Atoi(string(fields[2]))
	if err != nil {
		return procInfo{}, fmt.Errorf("stat pgrp: %w", err)
	}
	return procInfo{pid: pid, ppid: ppid, pgrp: pgrp, state: fields[0][0]}, nil
}

// children returns the live (non-zombie) children of pid.
func children(pid int) map[int]bool {
	kids := map[int]bool{}
	for _, p := range procs() {
		if p.ppid == pid && p.state != 'Z' {
			kids[p.pid] = true
		}
	}
	return kids
}

// groupMembers returns the live (non-zombie) processes in process group
// pgid.
func groupMembers(pgid int) map[int]bool {
	members := map[int]bool{}
	for _, p := range procs() {
		if p.pgrp == pgid && p.state != 'Z' {
			members[p.pid] = true
		}
	}
	return members
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	p, err := readStat(pid)
	return err == nil && p.state != 'Z'
}
