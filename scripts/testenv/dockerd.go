package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"
)

// Dockerd is a Docker Engine of a test's own, next to the machine's: one
// more simulated Docker host. It has its own --data-root, --exec-root (so
// its own containerd), API socket, pid file and cgroup parent; a default
// bridge of its own and no iptables rules, so it leaves the machine's
// engine and firewall alone. (Not --bridge none: a dockerd started with it
// deletes the host's docker0, under every other test's containers.) Containers run on networks the test creates
// with NewNetwork, each on a subnet of its own that the host reaches
// directly (nothing is published).
//
// Kill is the host's daemon dying (kill -9): as on a real host, its
// containers keep running in their shims, and Start brings the daemon back
// on the same state, which restarts containers that have a restart policy.
// The test's cleanup tears everything down by PID and path, even after a
// failure: containers, shims, networks, bridges, mounts and directories.
type Dockerd struct {
	Name   string
	Dir    string // everything of this engine lives below
	Socket string // unix socket path of its API
	Host   string // DOCKER_HOST for clients: unix://Socket
	Client *docker.Client

	bin, logPath, cgroupParent string
	bridge                     string // its default bridge, made by us
	args                       []string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	networks []string // IDs of the networks NewNetwork created
}

// DockerdBinary returns the dockerd binary's path ($SWITCHYARD_DOCKERD,
// then PATH and /usr/sbin).
func DockerdBinary(t testing.TB) string {
	t.Helper()
	p, err := lookBinary("SWITCHYARD_DOCKERD", "dockerd")
	Need(t, err == nil, fmt.Sprintf("dockerd: %v", err))
	Need(t, os.Geteuid() == 0, "root, to run a second dockerd")
	return p
}

// StartDockerd starts an engine named name and waits until its API
// answers; it is torn down when the test ends.
func StartDockerd(t testing.TB, name string) *Dockerd {
	t.Helper()
	bin := DockerdBinary(t)
	// A short path: the API socket and containerd's must fit in the 108
	// bytes of a unix socket address, which t.TempDir does not promise.
	dir, err := os.MkdirTemp("", "sy-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	d := &Dockerd{
		Name:         name,
		Dir:          dir,
		Socket:       filepath.Join(dir, "docker.sock"),
		bin:          bin,
		logPath:      filepath.Join(dir, "dockerd.log"),
		cgroupParent: filepath.Base(dir),
	}
	d.Host = "unix://" + d.Socket
	if err := d.makeBridge(); err != nil {
		t.Fatal(err)
	}
	// Our own (empty) config file: the machine's /etc/docker/daemon.json may
	// set a data-root, which dockerd refuses next to the flag.
	cfg := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(cfg, []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.args = []string{
		"--config-file", cfg,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"-H", d.Host,
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"--bridge", d.bridge,
		"--iptables=false", "--ip6tables=false", "--ip-masq=false",
		// vfs works on any file system; our fixture images are a few MB.
		"--storage-driver", "vfs",
		"--cgroup-parent", d.cgroupParent,
		"--log-level", "warn",
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(d.logPath)
			t.Logf("dockerd %s log (tail):\n%s", name, tail(b, 4000))
		}
		if err := d.Teardown(); err != nil {
			t.Errorf("dockerd %s teardown: %v", name, err)
		}
	})
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	return d
}

// Start runs the daemon (again, on the same state) and waits until its API
// answers.
func (d *Dockerd) Start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		return errors.New("dockerd " + d.Name + " already running")
	}
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(d.bin, d.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own group, so a kill reaches it and the containerd it starts;
	// Pdeathsig so it never outlives a crashed test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start dockerd %s: %w", d.Name, err)
	}
	done := make(chan struct{})
	d.cmd, d.done = cmd, done
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	// Its containerd, shims and containers inherit the priority (see boost).
	boost(cmd.Process.Pid)

	if d.Client == nil {
		c, err := docker.NewVersionedClient(d.Host, "1.41")
		if err != nil {
			return err
		}
		d.Client = c
	}
	// Generous: a restart restores every container (netns by netns), which
	// takes dockerd tens of seconds on a busy two-core machine.
	deadline := time.Now().Add(180 * time.Second)
	for {
		select {
		case <-done:
			d.cmd = nil
			return fmt.Errorf("dockerd %s exited at start:\n%s", d.Name, tailFile(d.logPath, 2000))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := d.Client.PingWithContext(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dockerd %s not ready: %w\n%s", d.Name, err, tailFile(d.logPath, 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// Pid returns the daemon's PID, 0 when it does not run.
func (d *Dockerd) Pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Pids returns the daemon's PID and its children's (its containerd), the
// processes Kill ends: what SIGSTOP must freeze for a host to vanish at
// once.
func (d *Dockerd) Pids() []int {
	pid := d.Pid()
	if pid == 0 {
		return nil
	}
	pids := []int{pid}
	for _, p := range Procs() {
		if p.PPID == pid {
			pids = append(pids, p.PID)
		}
	}
	return pids
}

// Kill is the daemon dying with kill -9, with the containerd it runs.
// Containers keep running in their shims, as on a real host. It waits
// until both are gone.
func (d *Dockerd) Kill() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return
	}
	pid := d.cmd.Process.Pid
	// containerd runs in a session of its own: kill it by PID, listed
	// before the daemon dies and it is reparented.
	var kids []int
	for _, p := range Procs() {
		if p.PPID == pid {
			kids = append(kids, p.PID)
		}
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	<-d.done
	d.cmd = nil
	// Wait until they are gone, so Start never meets the old containerd.
	_ = WaitFor(10*time.Second, func() error {
		for _, k := range kids {
			if p, ok := readProc(k); ok && p.State != 'Z' {
				_ = syscall.Kill(k, syscall.SIGKILL)
				return fmt.Errorf("pid %d of dockerd %s still alive", k, d.Name)
			}
		}
		return nil
	})
	// The dead containerd is a zombie until init reaps it, which init here
	// may take many seconds to do; meanwhile a new dockerd finds its PID in
	// containerd's pid file "alive" and waits for it instead of starting
	// one. The process is dead: its pid file is stale.
	pidFile := filepath.Join(d.Dir, "exec", "containerd", "containerd.pid")
	if b, err := os.ReadFile(pidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && slices.Contains(kids, pid) {
			_ = os.Remove(pidFile)
		}
	}
}

// LoadImage copies image from the engine src into this one (docker save |
// docker load): no registry is reachable here.
func (d *Dockerd) LoadImage(src *docker.Client, image string) error {
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := src.ExportImage(docker.ExportImageOptions{Name: image, OutputStream: pw, InactivityTimeout: 30 * time.Second})
		pw.CloseWithError(err)
		errc <- err
	}()
	loadErr := d.Client.LoadImage(docker.LoadImageOptions{InputStream: pr, Context: context.Background()})
	pr.CloseWithError(errors.New("load ended"))
	if err := <-errc; err != nil {
		return fmt.Errorf("docker save %s: %w", image, err)
	}
	if loadErr != nil {
		return fmt.Errorf("docker load %s into %s: %w", image, d.Name, loadErr)
	}
	return nil
}

// NewNetwork creates a bridge network on a free subnet (see FreeSubnet);
// it returns the network and its subnet. Teardown removes it, and its
// bridge if the daemon is dead by then.
func (d *Dockerd) NewNetwork(name string) (*docker.Network, *net.IPNet, error) {
	subnet, err := FreeSubnet()
	if err != nil {
		return nil, nil, err
	}
	n, err := d.Client.CreateNetwork(docker.CreateNetworkOptions{
		Name:   name,
		Driver: "bridge",
		Labels: map[string]string{TestLabel: "1"},
		IPAM:   &docker.IPAMOptions{Driver: "default", Config: []docker.IPAMConfig{{Subnet: subnet.String()}}},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create network %s on %s: %w", name, d.Name, err)
	}
	d.mu.Lock()
	d.networks = append(d.networks, n.ID)
	d.mu.Unlock()
	return n, subnet, nil
}

var subnets struct {
	mu    sync.Mutex
	taken map[string]bool
}

// FreeSubnet returns a /24 in 10.213.0.0/16 that no interface address or
// route of this machine overlaps, and that this process has not handed out
// before: each test network gets a subnet of its own, so the host routes to
// every container directly.
func FreeSubnet() (*net.IPNet, error) {
	subnets.mu.Lock()
	defer subnets.mu.Unlock()
	if subnets.taken == nil {
		subnets.taken = map[string]bool{}
	}
	used := hostNets()
	start := rand.IntN(256)
	for i := range 256 {
		_, n, _ := net.ParseCIDR(fmt.Sprintf("10.213.%d.0/24", (start+i)%256))
		if subnets.taken[n.String()] {
			continue
		}
		overlaps := false
		for _, u := range used {
			if u.Contains(n.IP) || n.Contains(u.IP) {
				overlaps = true
				break
			}
		}
		if !overlaps {
			subnets.taken[n.String()] = true
			return n, nil
		}
	}
	return nil, errors.New("no free /24 in 10.213.0.0/16")
}

// hostNets lists the networks of this machine's interface addresses and
// IPv4 routes.
func hostNets() []*net.IPNet {
	var out []*net.IPNet
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				out = append(out, &net.IPNet{IP: n.IP.Mask(n.Mask), Mask: n.Mask})
			}
		}
	}
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 8 || fl[0] == "Iface" {
			continue
		}
		dst, err1 := strconv.ParseUint(fl[1], 16, 32)
		mask, err2 := strconv.ParseUint(fl[7], 16, 32)
		if err1 != nil || err2 != nil || mask == 0 {
			continue // the default route overlaps everything and nothing
		}
		// /proc/net/route is in host (little-endian) byte order.
		ip := net.IPv4(byte(dst), byte(dst>>8), byte(dst>>16), byte(dst>>24))
		m := net.IPv4Mask(byte(mask), byte(mask>>8), byte(mask>>16), byte(mask>>24))
		out = append(out, &net.IPNet{IP: ip.Mask(m), Mask: m})
	}
	return out
}

// Teardown removes everything of the engine: with the daemon up, its
// containers and networks through the API, then the daemon itself; then,
// by PID, whatever outlived it (containerd shims and their containers,
// found by the exec-root in their command line); the bridges of its
// networks; its mounts; its directory. It is safe to call more than once.
func (d *Dockerd) Teardown() error {
	var errs []error
	if d.Pid() != 0 {
		if cs, err := d.Client.ListContainers(docker.ListContainersOptions{All: true}); err == nil {
			for _, c := range cs {
				RemoveContainer(d.Client, c.ID)
			}
		}
		d.mu.Lock()
		nets := append([]string(nil), d.networks...)
		d.mu.Unlock()
		for _, n := range nets {
			_ = d.Client.RemoveNetwork(n)
		}
		d.stop(15 * time.Second)
	}
	d.killLeftovers()
	d.mu.Lock()
	nets := append([]string(nil), d.networks...)
	d.mu.Unlock()
	for _, id := range nets {
		br := "br-" + id[:12]
		if _, err := net.InterfaceByName(br); err == nil {
			if out, err := exec.Command("ip", "link", "del", br).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", br, err, out))
			}
		}
	}
	if d.bridge != "" {
		if err := ipCmd("link", "del", d.bridge); err != nil && !errors.Is(err, errNoSuchLink) {
			errs = append(errs, err)
		}
	}
	if err := unmountUnder(d.Dir); err != nil {
		errs = append(errs, err)
	}
	removeCgroups(d.cgroupParent)
	if err := os.RemoveAll(d.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// makeBridge creates the engine's default bridge on a free subnet, with
// the subnet's first address, named after the engine's directory so that
// concurrent tests never share one (an interface name has 15 bytes).
func (d *Dockerd) makeBridge() error {
	n, err := FreeSubnet()
	if err != nil {
		return err
	}
	d.bridge = "sybr" + strings.TrimPrefix(filepath.Base(d.Dir), "sy-dockerd-")
	d.bridge = d.bridge[:min(len(d.bridge), 15)]
	gw := net.IPNet{IP: append(net.IP(nil), n.IP.To4()...), Mask: n.Mask}
	gw.IP[3] = 1
	for _, args := range [][]string{
		{"link", "add", d.bridge, "type", "bridge"},
		{"addr", "add", gw.String(), "dev", d.bridge},
		{"link", "set", d.bridge, "up"},
	} {
		if err := ipCmd(args...); err != nil {
			return err
		}
	}
	return nil
}

// errNoSuchLink: ip found no such interface (already gone).
var errNoSuchLink = errors.New("no such interface")

// ipCmd runs ip(8) with a deadline.
func ipCmd(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err == nil {
		return nil
	}
	if strings.Contains(string(out), "Cannot find device") {
		return fmt.Errorf("ip %s: %w", strings.Join(args, " "), errNoSuchLink)
	}
	return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
}

// stop sends SIGTERM and waits up to grace, then kills the group.
func (d *Dockerd) stop(grace time.Duration) {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		d.mu.Lock()
		d.cmd = nil
		d.mu.Unlock()
	case <-time.After(grace):
		d.Kill()
	}
}

// killLeftovers SIGKILLs the processes that outlive a dead daemon: every
// process whose command line names this engine's directory (containerd,
// its shims) and all their descendants (the containers).
func (d *Dockerd) killLeftovers() {
	_ = WaitFor(15*time.Second, func() error {
		procs := Procs()
		kids := map[int][]int{}
		for _, p := range procs {
			kids[p.PPID] = append(kids[p.PPID], p.PID)
		}
		var victims []int
		var walk func(int)
		walk = func(pid int) {
			victims = append(victims, pid)
			for _, k := range kids[pid] {
				walk(k)
			}
		}
		for _, p := range procs {
			if p.State == 'Z' || p.PID == os.Getpid() {
				continue
			}
			b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.PID), "cmdline"))
			if err == nil && strings.Contains(string(b), d.Dir+"/") {
				walk(p.PID)
			}
		}
		alive := 0
		for _, pid := range victims {
			if p, ok := readProc(pid); ok && p.State != 'Z' {
				alive++
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if alive > 0 {
			return fmt.Errorf("%d processes of dockerd %s still alive", alive, d.Name)
		}
		return nil
	})
}

// unmountUnder detaches every mount point below dir, deepest first
// (dockerd bind-mounts its data-root onto itself, and network namespaces
// are mounted in its exec-root).
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) > 4 && (fl[4] == dir || strings.HasPrefix(fl[4], dir+"/")) {
			points = append(points, fl[4])
		}
	}
	f.Close()
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("umount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// removeCgroups removes the (empty, by now) cgroup directories below parent
// in every cgroup v1 hierarchy or the v2 one, deepest first.
func removeCgroups(parent string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + parent)
	if p := "/sys/fs/cgroup/" + parent; dirExists(p) {
		roots = append(roots, p)
	}
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i])
		}
	}
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	return tail(b, n)
}
