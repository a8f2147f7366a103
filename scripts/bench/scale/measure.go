package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// row is one tool at one size.
type row struct {
	tool       string
	services   int
	firstFull  time.Duration // 0: never within the timeout
	lines      int           // instances in the file at the end
	conns      int           // connections to the agent, at the end
	rssMB      float64
	cpuSeconds float64
	warns      int
}

func measureSize(dir, src, ours, ct string, s int, timeout time.Duration) ([]row, error) {
	d := filepath.Join(dir, strconv.Itoa(s))
	if err := os.MkdirAll(d, 0o755); err != nil {
		return nil, err
	}
	a, err := startAgent(d)
	if err != nil {
		return nil, err
	}
	defer a.stop()
	if err := a.register(s); err != nil {
		return nil, err
	}
	port := a.addr[strings.LastIndexByte(a.addr, ':')+1:]
	tools := []struct {
		name string
		args func(out string) []string
		bin  string
	}{
		{"switchyard", func(out string) []string {
			return []string{"--consul-addr", a.addr, "--proxy", "none", "-t", src + ":" + out, "--log-level", "warn"}
		}, ours},
		{"consul-template", func(out string) []string {
			return []string{"-consul-addr", a.addr, "-template", src + ":" + out, "-log-level", "warn"}
		}, ct},
	}
	var rows []row
	for _, tl := range tools {
		out := filepath.Join(d, tl.name+".out")
		r, err := measureOne(tl.name, tl.bin, tl.args(out), out, filepath.Join(d, tl.name+".log"), port, s, timeout)
		if err != nil {
			return nil, err
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// measureOne runs one tool until its output holds every instance (3 per
// service, plus the agent's own consul service) or timeout, then samples
// it and stops it.
func measureOne(name, bin string, args []string, out, logPath, port string, s int, timeout time.Duration) (row, error) {
	r := row{tool: name, services: s}
	logf, err := os.Create(logPath)
	if err != nil {
		return r, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	defer stopProc(cmd)
	want := 3*s + 1
	for time.Since(start) < timeout {
		if r.lines = countLines(out); r.lines >= want {
			r.firstFull = time.Since(start)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Let the watches settle into their blocking queries before sampling.
	time.Sleep(time.Second)
	pid := cmd.Process.Pid
	r.lines = max(countLines(out)-1, 0)
	r.conns = connsTo(pid, port)
	r.rssMB, r.cpuSeconds = procStats(pid)
	b, _ := os.ReadFile(logPath)
	r.warns = bytes.Count(b, []byte("WARN"))
	return r, nil
}

func stopProc(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func countLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("\n"))
}

// connsTo counts pid's established TCP connections to the agent's port.
func connsTo(pid int, port string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, "ss", "-tnpH", "state", "established", "dport", "= :"+port).Output()
	if err != nil {
		return -1
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "pid="+strconv.Itoa(pid)+",") {
			n++
		}
	}
	return n
}

// procStats reads RSS (MB) and user+system CPU seconds of pid.
func procStats(pid int) (float64, float64) {
	var rss, cpu float64
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				rss = kb / 1024
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 12 {
			ut, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			cpu = (ut + st) / 100 // USER_HZ
		}
	}
	return rss, cpu
}

func printTable(rows []row, timeout time.Duration) {
	fmt.Printf("%-16s %8s %14s %12s %6s %8s %8s %7s\n", "tool", "services", "first render", "instances", "conns", "RSS MB", "CPU s", "WARNs")
	for _, r := range rows {
		first := fmt.Sprintf("never (%s)", timeout)
		if r.firstFull > 0 {
			first = r.firstFull.Round(time.Millisecond).String()
		}
		fmt.Printf("%-16s %8d %14s %6d/%-5d %6d %8.1f %8.2f %7d\n", r.tool, r.services, first, r.lines, 3*r.services, r.conns, r.rssMB, r.cpuSeconds, r.warns)
	}
}
