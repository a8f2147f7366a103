// Package testenv gives every test in the repository the real components
// users run: a Consul agent, the Docker Engine with a fixture image built
// FROM scratch, nginx and HAProxy with a prefix dir of their own, and our
// binaries built from source. Each helper cleans up what it started, even
// when the test fails.
//
// A missing component skips the test with a hint naming scripts/setup.sh,
// except under CI=true, where it fails: CI must never pass by skipping.
package testenv

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// InCI reports whether we run under CI, where missing dependencies fail.
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

// Need stops the test when a real dependency is missing: Fatal under CI,
// Skip elsewhere. what names the dependency and why it is missing.
func Need(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf("%s (install it with scripts/setup.sh)", what)
	if InCI() {
		t.Fatalf("missing real dependency under CI=true: %s", msg)
	}
	t.Skipf("skipping: %s", msg)
}

// Eventually calls fn until it returns nil or timeout passes, then fails the
// test with fn's last error. It polls every 20ms: tests wait on a condition
// with a deadline, never on a fixed sleep.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	if err := WaitFor(timeout, fn); err != nil {
		t.Fatalf("condition not met within %s: %v", timeout, err)
	}
}

// WaitFor is Eventually for callers without a testing.TB (benchmarks).
func WaitFor(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := PickPort()
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	return p
}

// PickPort is FreePort for callers without a testing.TB (benchmarks).
func PickPort() (int, error) {
	ports, err := PickPorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// Ports are handed out below the kernel's ephemeral range (32768 and up
// here), in turn from a random start per test process. A port the kernel
// picked for a listener and freed again is in that range, where any
// outgoing connection of any test running alongside may take it before
// the proxy or agent it was meant for binds it (a CI run saw nginx fail to
// start so). Below the range only our own picks compete: in turn within a
// process, and each checked free.
const (
	portsFrom, portsTo = 20000, 32000
)

var nextPort = struct {
	sync.Mutex
	p int
}{p: portsFrom + rand.IntN(portsTo-portsFrom)}

// PickPorts returns n distinct ports free on 127.0.0.1 (TCP) a moment ago.
func PickPorts(n int) ([]int, error) {
	nextPort.Lock()
	defer nextPort.Unlock()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries == portsTo-portsFrom {
			return nil, fmt.Errorf("no %d free ports in %d-%d", n, portsFrom, portsTo)
		}
		p := nextPort.p
		nextPort.p++
		if nextPort.p >= portsTo {
			nextPort.p = portsFrom
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l.Close()
		ports = append(ports, p)
	}
	return ports, nil
}

// FreePortRun returns the first of n consecutive ports free on 127.0.0.1
// for TCP and UDP (a Consul agent's serf ports use both). It looks below
// the kernel's ephemeral range: next to a port the kernel handed out,
// the following ones are often taken by the connections of tests running
// alongside (a demo agent given such a run could not bind its serf port
// and never elected a leader: a CI failure of TestDemoScript).
func FreePortRun(t testing.TB, n int) int {
	t.Helper()
	for range 100 {
		base := 20000 + rand.IntN(12000-n)
		if portsFree(base, n) {
			return base
		}
	}
	t.Fatalf("no run of %d free ports found in 20000-32000", n)
	return 0
}

// portsFree binds every port of the run on TCP and UDP, all at once.
func portsFree(base, n int) bool {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for p := base; p < base+n; p++ {
		addr := "127.0.0.1:" + strconv.Itoa(p)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		held = append(held, l)
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		held = append(held, u)
	}
	return true
}

// lookBinary finds a binary: the env var wins, then the candidates, then PATH.
func lookBinary(envVar, name string, candidates ...string) (string, error) {
	if p := os.Getenv(envVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", envVar, p, err)
		}
		return p, nil
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return c, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	// Debian installs nginx and haproxy in /usr/sbin, which a non-root PATH lacks.
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New(name + " not found (set " + envVar + " or put it on PATH)")
}

// NginxBinary returns the nginx binary's path.
func NginxBinary(t testing.TB) string {
	t.Helper()
	p, err := lookBinary("SWITCHYARD_NGINX", "nginx")
	Need(t, err == nil, fmt.Sprintf("nginx: %v", err))
	return p
}

// HAProxyBinary returns the haproxy binary's path.
func HAProxyBinary(t testing.TB) string {
	t.Helper()
	p, err := lookBinary("SWITCHYARD_HAPROXY", "haproxy")
	Need(t, err == nil, fmt.Sprintf("haproxy: %v", err))
	return p
}

// CaddyBinary returns the caddy binary's path.
func CaddyBinary(t testing.TB) string {
	t.Helper()
	p, err := lookBinary("SWITCHYARD_CADDY", "caddy")
	Need(t, err == nil, fmt.Sprintf("caddy: %v", err))
	return p
}
