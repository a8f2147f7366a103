package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// NginxPrefix makes a prefix dir of nginx's own (with the logs/ folder nginx
// expects) so each test's nginx is independent of /etc/nginx and of others.
func NginxPrefix(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Nginx is a running nginx master in the foreground of its own prefix.
type Nginx struct {
	Bin, Prefix, Conf string
	Cmd               *exec.Cmd
	done              chan struct{}
}

// StartNginx runs nginx -p prefix -c conf in the foreground, waits until
// addr (e.g. "127.0.0.1:8080") accepts connections, and stops it at cleanup.
func StartNginx(t testing.TB, prefix, conf, addr string) *Nginx {
	t.Helper()
	n := &Nginx{Bin: NginxBinary(t), Prefix: prefix, Conf: conf, done: make(chan struct{})}
	n.Cmd = exec.Command(n.Bin, "-p", prefix, "-c", conf, "-g", "daemon off;")
	n.Cmd.Stdout, n.Cmd.Stderr = os.Stderr, os.Stderr
	n.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.Cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	go func() { _ = n.Cmd.Wait(); close(n.done) }()
	t.Cleanup(func() {
		_ = n.Cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			_ = n.Cmd.Process.Kill()
			<-n.done
		}
	})
	Eventually(t, 10*time.Second, func() error { return dial(addr) })
	return n
}

// Exited reports whether the nginx master has exited.
func (n *Nginx) Exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

func dial(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	return c.Close()
}
