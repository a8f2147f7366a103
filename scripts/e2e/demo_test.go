package e2e

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// TestDemoScript runs the README's first command the way a user does (in its
// detached form, on ports of its own) and checks what it promises: traffic
// through nginx alternating between the two containers, and a clean "down".
func TestDemoScript(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo")
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	c := testenv.Docker(t)
	name := testenv.RandomName("sy-test-demo")
	env := []string{
		"DEMO_PORT=" + strconv.Itoa(testenv.FreePort(t)),
		// Consul needs four consecutive ports from here.
		"DEMO_CONSUL_PORT=" + strconv.Itoa(testenv.FreePortRun(t, 4)),
		"DEMO_DIR=" + filepath.Join(t.TempDir(), "demo"),
		"DEMO_NAME=" + name,
	}
	run := func(args ...string) string {
		cmd := exec.Command(filepath.Join(root, "scripts", "demo.sh"), args...)
		cmd.Env = append(cmd.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("demo.sh %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		cmd := exec.Command(filepath.Join(root, "scripts", "demo.sh"), "down")
		cmd.Env = append(cmd.Environ(), env...)
		_ = cmd.Run()
	})

	out := run("up", "-d")
	t.Logf("demo output:\n%s", out)
	for _, want := range []string{"hello from web-1", "hello from web-2", "docker stop " + name + "-web-1"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}

	run("down")
	left, err := c.ListContainers(docker.ListContainersOptions{All: true, Filters: map[string][]string{"label": {"switchyard.demo=" + name}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("demo.sh down left %d containers", len(left))
	}
}
