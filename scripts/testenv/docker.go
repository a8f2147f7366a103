package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"
)

// TestLabel marks every container, network and image the tests create, so a
// crashed run's leftovers can be found: docker ps -a --filter label=switchyard.test
const TestLabel = "switchyard.test"

// Docker returns a client for the engine at DOCKER_HOST (default: the local
// socket) after checking that the engine answers.
func Docker(t testing.TB) *docker.Client {
	t.Helper()
	c, err := DockerClient()
	Need(t, err == nil, fmt.Sprintf("Docker Engine: %v", err))
	return c
}

// DockerClient is Docker for callers without a testing.TB.
func DockerClient() (*docker.Client, error) {
	c, err := docker.NewClientFromEnv()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.PingWithContext(ctx); err != nil {
		return nil, fmt.Errorf("ping %s: %w", c.Endpoint(), err)
	}
	// go-dockerclient detects the server's API version lazily, without a
	// lock, in the first StartContainer: do that once here, so tests may
	// start containers from many goroutines (it fails: no such container).
	_ = c.StartContainerWithContext("switchyard-prime-api-version", nil, ctx)
	return c, nil
}

var webapp struct {
	once sync.Once
	tag  string
	err  error
}

// WebappImage builds (once per process) the fixture image: the static Go
// server in scripts/fixtures/webapp, FROM scratch, tagged by content so a
// rebuild only happens when the program changes.
func WebappImage(t testing.TB) string {
	t.Helper()
	c := Docker(t)
	webapp.once.Do(func() { webapp.tag, webapp.err = BuildWebappImage(c) })
	if webapp.err != nil {
		t.Fatalf("build fixture image: %v", webapp.err)
	}
	return webapp.tag
}

// BuildWebappImage compiles the fixture server statically and builds its
// image; it returns the tag.
func BuildWebappImage(c *docker.Client) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "switchyard-webapp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "webapp")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./scripts/fixtures/webapp")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build webapp: %w\n%s", err, out)
	}
	prog, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(prog)
	tag := "switchyard-test/webapp:" + hex.EncodeToString(sum[:6])
	if _, err := c.InspectImage(tag); err == nil {
		return tag, nil
	}

	dockerfile := "FROM scratch\nCOPY webapp /webapp\nEXPOSE 8080\nENTRYPOINT [\"/webapp\"]\n"
	var ctxTar bytes.Buffer
	tw := tar.NewWriter(&ctxTar)
	for _, f := range []struct {
		name string
		mode int64
		body []byte
	}{{"Dockerfile", 0o644, []byte(dockerfile)}, {"webapp", 0o755, prog}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.body))}); err != nil {
			return "", err
		}
		if _, err := tw.Write(f.body); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	var out bytes.Buffer
	err = c.BuildImage(docker.BuildImageOptions{
		Name:           tag,
		InputStream:    &ctxTar,
		OutputStream:   &out,
		Labels:         map[string]string{TestLabel: "1"},
		RmTmpContainer: true,
	})
	if err != nil {
		return "", fmt.Errorf("docker build %s: %w\n%s", tag, err, out.String())
	}
	return tag, nil
}

// RunOptions describes a fixture container.
type RunOptions struct {
	Name    string            // default: a random "sy-test-…" name
	Image   string            // default: WebappImage
	Labels  map[string]string // TestLabel is always added
	Env     map[string]string
	Ports   []string // container ports to publish on 127.0.0.1 with a random host port, "8080" or "53/udp"
	Network string   // network mode or user-defined network name
	Cmd     []string
	// Healthcheck is a Docker HEALTHCHECK; the webapp image answers
	// ProbeHealthcheck.
	Healthcheck *docker.HealthConfig
	// StopTimeout is docker stop's default grace for this container.
	StopTimeout int
}

// ProbeHealthcheck is a HEALTHCHECK for the webapp image (no shell in it):
// its own probe mode, every interval.
func ProbeHealthcheck(interval time.Duration) *docker.HealthConfig {
	return &docker.HealthConfig{Test: []string{"CMD", "/webapp", "probe"}, Interval: interval, Timeout: 2 * time.Second, Retries: 1}
}

// RunContainer creates and starts a container; it is force-removed when the
// test ends.
func RunContainer(t testing.TB, o RunOptions) *docker.Container {
	t.Helper()
	c := Docker(t)
	if o.Image == "" {
		o.Image = WebappImage(t)
	}
	ctr, err := StartContainer(c, o)
	if ctr != nil {
		t.Cleanup(func() { RemoveContainer(c, ctr.ID) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return ctr
}

// StartContainer is RunContainer for callers that clean up themselves. It
// returns the inspected container (with its network settings filled in).
func StartContainer(c *docker.Client, o RunOptions) (*docker.Container, error) {
	if o.Name == "" {
		o.Name = RandomName("sy-test")
	}
	labels := map[string]string{TestLabel: "1"}
	for k, v := range o.Labels {
		labels[k] = v
	}
	var env []string
	for k, v := range o.Env {
		env = append(env, k+"="+v)
	}
	exposed := map[docker.Port]struct{}{}
	bindings := map[docker.Port][]docker.PortBinding{}
	for _, p := range o.Ports {
		port := docker.Port(p)
		if !strings.Contains(p, "/") {
			port = docker.Port(p + "/tcp")
		}
		exposed[port] = struct{}{}
		// Loopback only: nothing our tests start is reachable from elsewhere.
		bindings[port] = []docker.PortBinding{{HostIP: "127.0.0.1", HostPort: ""}}
	}
	ctr, err := c.CreateContainer(docker.CreateContainerOptions{
		Name: o.Name,
		Config: &docker.Config{
			Image:        o.Image,
			Labels:       labels,
			Env:          env,
			Cmd:          o.Cmd,
			ExposedPorts: exposed,
			Healthcheck:  o.Healthcheck,
			StopTimeout:  o.StopTimeout,
		},
		HostConfig: &docker.HostConfig{
			PortBindings: bindings,
			NetworkMode:  o.Network,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", o.Name, err)
	}
	if err := c.StartContainer(ctr.ID, nil); err != nil {
		return ctr, fmt.Errorf("start container %s: %w", o.Name, err)
	}
	inspected, err := c.InspectContainerWithOptions(docker.InspectContainerOptions{ID: ctr.ID})
	if err != nil {
		return ctr, fmt.Errorf("inspect container %s: %w", o.Name, err)
	}
	return inspected, nil
}

// RemoveContainer force-removes a container, ignoring "not found".
func RemoveContainer(c *docker.Client, id string) {
	_ = c.RemoveContainer(docker.RemoveContainerOptions{ID: id, Force: true, RemoveVolumes: true})
}

// HostPort returns the 127.0.0.1 host port Docker published for a container
// port such as "8080/tcp".
func HostPort(ctr *docker.Container, port string) string {
	if !strings.Contains(port, "/") {
		port += "/tcp"
	}
	for _, b := range ctr.NetworkSettings.Ports[docker.Port(port)] {
		if b.HostIP == "127.0.0.1" {
			return b.HostPort
		}
	}
	return ""
}

// CreateNetwork creates a user-defined bridge network, removed at cleanup.
// Tests that talk to container IPs directly must use one of these, never the
// default bridge.
func CreateNetwork(t testing.TB) *docker.Network {
	t.Helper()
	c := Docker(t)
	n, err := c.CreateNetwork(docker.CreateNetworkOptions{
		Name:   RandomName("sy-test-net"),
		Driver: "bridge",
		Labels: map[string]string{TestLabel: "1"},
	})
	if err != nil {
		t.Fatalf("create network: %v", err)
	}
	t.Cleanup(func() { _ = c.RemoveNetwork(n.ID) })
	return n
}

// RandomName returns prefix-<8 hex chars>.
func RandomName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}
