package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// row is one tool at one size.
type row struct {
	tool       string
	services   int
	firstFull  time.Duration // 0: never within the timeout
	lines      int           // instances in the file at the end
	conns      int           // connections to the agent, at the end
	peakConns  int           // most connections to the agent seen while it ran
	rssMB      float64
	cpuSeconds float64
	consulCPU  float64       // the agent's CPU seconds while the tool ran
	quietCPU   float64       // the agent's CPU seconds in a quiet window (agentLoad)
	churnCPU   float64       // ... and in a window of churn
	change     time.Duration // one new instance -> in the file (0: not measured)
	identical  string        // first complete render vs the expected bytes
	warns      int
	mirrorSync string // the mirror's sync_seconds: mean over its syncs
}

// mirrorSync reads the mirror's sync latency (a change seen by its watch
// to every answer it touched fetched again) from the renderer's /metrics.
func mirrorSync(addr string) string {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return "-"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum, count float64
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		switch f[0] {
		case "switchyard_renderer_consul_mirror_sync_seconds_sum":
			sum, _ = strconv.ParseFloat(f[1], 64)
		case "switchyard_renderer_consul_mirror_sync_seconds_count":
			count, _ = strconv.ParseFloat(f[1], 64)
		}
	}
	if count == 0 {
		return "-"
	}
	return fmt.Sprintf("%s (%d)", time.Duration(sum/count*float64(time.Second)).Round(time.Millisecond), int(count))
}

func measureSize(dir, src, ours, ct string, s int, timeout time.Duration, only []string) ([]row, design, error) {
	d := filepath.Join(dir, strconv.Itoa(s))
	if err := os.MkdirAll(d, 0o755); err != nil {
		return nil, design{}, err
	}
	a, err := startAgent(d)
	if err != nil {
		return nil, design{}, err
	}
	defer a.stop()
	if err := a.register(s); err != nil {
		return nil, design{}, err
	}
	ds, err := measureDesigns(a, s)
	if err != nil {
		return nil, ds, err
	}
	port := a.addr[strings.LastIndexByte(a.addr, ':')+1:]
	sp, err := testenv.PickPort()
	if err != nil {
		return nil, ds, err
	}
	statusAddr := "127.0.0.1:" + strconv.Itoa(sp)
	tools := []struct {
		name string
		args func(out string) []string
		bin  string
	}{
		{"switchyard", func(out string) []string {
			return []string{"--consul-addr", a.addr, "--proxy", "none", "-t", src + ":" + out, "--log-level", "warn",
				"--status-addr", statusAddr}
		}, ours},
		{"consul-template", func(out string) []string {
			return []string{"-consul-addr", a.addr, "-template", src + ":" + out, "-log-level", "warn"}
		}, ct},
	}
	var rows []row
	for i, tl := range tools {
		if !slices.Contains(only, tl.name) {
			continue
		}
		out := filepath.Join(d, tl.name+".out")
		cpu0 := agentCPU(a)
		status := ""
		if tl.name == "switchyard" {
			status = statusAddr
		}
		r, err := measureOne(a, i, tl.name, tl.bin, tl.args(out), out, filepath.Join(d, tl.name+".log"), port, status, s, timeout)
		if err != nil {
			return nil, ds, err
		}
		r.consulCPU = agentCPU(a) - cpu0
		rows = append(rows, r)
	}
	return rows, ds, nil
}

func agentCPU(a *agent) float64 {
	_, cpu := procStats(a.cmd.Process.Pid)
	return cpu
}

// withoutConsul drops the agent's own consul service (its port is the
// agent's server port, different each run).
func withoutConsul(out string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(out, "\n") {
		if !strings.HasPrefix(l, "consul ") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// expected is what the template renders for s services x 3, without the
// agent's consul service: names sorted, instances by ID.
func expected(s int) string {
	var b strings.Builder
	for i := range s {
		for j := range 3 {
			fmt.Fprintf(&b, "s%05d 10.%d.%d.%d:8080\n", i, i/250, i%250, j+1)
		}
	}
	return b.String()
}

// measureOne runs one tool until its output holds every instance (3 per
// service, plus the agent's own consul service) or timeout, then samples
// it and stops it.
func measureOne(a *agent, nth int, name, bin string, args []string, out, logPath, port, status string, s int, timeout time.Duration) (row, error) {
	r := row{tool: name, services: s, identical: "-"}
	logf, err := os.Create(logPath)
	if err != nil {
		return r, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), toolEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	defer stopProc(cmd)
	want := 3*s + 1
	pid := cmd.Process.Pid
	for time.Since(start) < timeout {
		r.peakConns = max(r.peakConns, connsTo(pid, port))
		if r.lines = countLines(out); r.lines >= want {
			r.firstFull = time.Since(start)
			b, _ := os.ReadFile(out)
			r.identical = strconv.FormatBool(withoutConsul(string(b)) == expected(s))
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Let the watches settle into their blocking queries before sampling.
	time.Sleep(time.Second)
	if r.firstFull > 0 {
		d, err := oneChange(a, nth, out, pid, port, &r)
		if err != nil {
			return r, err
		}
		r.change = d
	}
	if status != "" {
		r.mirrorSync = mirrorSync(status)
	}
	r.lines = max(countLines(out)-1, 0)
	r.conns = connsTo(pid, port)
	r.rssMB, r.cpuSeconds = procStats(pid)
	b, _ := os.ReadFile(logPath)
	r.warns = bytes.Count(b, []byte("WARN"))
	// Last: the tool's own figures above do not include the windows.
	if loadWindow > 0 {
		if r.quietCPU, r.churnCPU, err = agentLoad(a, nth, s); err != nil {
			return r, err
		}
	}
	return r, nil
}

// oneChange registers one new instance (a distinct one per tool) and
// times it into the file, then removes it again.
func oneChange(a *agent, nth int, out string, pid int, port string, r *row) (time.Duration, error) {
	id := fmt.Sprintf("s00001-%d", 10+nth)
	addr := fmt.Sprintf("10.200.%d.1", nth)
	line := []byte("s00001 " + addr + ":8080\n")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := a.client.Agent().ServiceRegisterOpts(&api.AgentServiceRegistration{ID: id, Name: "s00001", Address: addr, Port: 8080},
		api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return 0, err
	}
	var d time.Duration
	for time.Since(start) < 10*time.Second {
		if b, _ := os.ReadFile(out); bytes.Contains(b, line) {
			d = time.Since(start)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.peakConns = max(r.peakConns, connsTo(pid, port))
	return d, a.client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
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
	fmt.Printf("%-16s %8s %14s %12s %11s %8s %7s %9s %13s %10s %9s %7s %14s\n", "tool", "services", "first render", "instances",
		"conns/peak", "RSS MB", "CPU s", "Consul s", "quiet/churn", "change", "identical", "WARNs", "mirror sync")
	for _, r := range rows {
		first := fmt.Sprintf("never (%s)", timeout)
		if r.firstFull > 0 {
			first = r.firstFull.Round(time.Millisecond).String()
		}
		change := "-"
		if r.change > 0 {
			change = r.change.Round(time.Millisecond).String()
		}
		sync := r.mirrorSync
		if sync == "" {
			sync = "-"
		}
		fmt.Printf("%-16s %8d %14s %6d/%-5d %5d/%-5d %8.1f %7.2f %9.2f %6.2f/%-6.2f %10s %9s %7d %14s\n", r.tool, r.services, first, r.lines, 3*r.services,
			r.conns, r.peakConns, r.rssMB, r.cpuSeconds, r.consulCPU, r.quietCPU, r.churnCPU, change, r.identical, r.warns, sync)
	}
}
