package docker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/switchyard/switchyard/registrar/internal/container"
	"github.com/switchyard/switchyard/scripts/testenv"
)

func TestFromDocker(t *testing.T) {
	d := &docker.Container{
		ID:   "abc",
		Name: "/web1",
		Config: &docker.Config{
			Image:        "webapp:1",
			Env:          []string{"SERVICE_NAME=x"},
			Labels:       map[string]string{"a": "b"},
			ExposedPorts: map[docker.Port]struct{}{"8080/tcp": {}, "9000/tcp": {}, "53/udp": {}},
		},
		State:      docker.State{Running: true},
		HostConfig: &docker.HostConfig{NetworkMode: "front"},
		NetworkSettings: &docker.NetworkSettings{
			Networks: map[string]docker.ContainerNetwork{
				"front": {IPAddress: "10.2.0.2"},
				"back":  {IPAddress: "10.1.0.2", GlobalIPv6Address: "fd00::2"},
			},
			Ports: map[docker.Port][]docker.PortBinding{
				"8080/tcp": {{HostIP: "::", HostPort: "32768"}, {HostIP: "0.0.0.0", HostPort: "32768"}},
				"9000/tcp": nil,
				"53/udp":   {{HostIP: "127.0.0.1", HostPort: "1053"}, {HostIP: "127.0.0.1", HostPort: "bogus"}},
			},
		},
	}
	got := FromDocker(d, nil)
	want := container.Container{
		ID: "abc", Name: "web1", Image: "webapp:1", Env: []string{"SERVICE_NAME=x"}, Labels: map[string]string{"a": "b"},
		State:       container.State{Running: true},
		NetworkMode: "front",
		Networks:    []container.Network{{Name: "back", IP: "10.1.0.2", IPv6: "fd00::2"}, {Name: "front", IP: "10.2.0.2"}},
		Ports: []container.Port{
			{Port: 53, Proto: "udp", Bindings: []container.Binding{{HostIP: "127.0.0.1", HostPort: 1053}}},
			{Port: 8080, Proto: "tcp", Bindings: []container.Binding{{HostIP: "0.0.0.0", HostPort: 32768}, {HostIP: "::", HostPort: 32768}}},
			{Port: 9000, Proto: "tcp"},
		},
		Inspect: d,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestFromDockerStatesAndModes(t *testing.T) {
	base := func(mod func(*docker.Container)) *docker.Container {
		d := &docker.Container{ID: "x", Name: "/x", Config: &docker.Config{}, HostConfig: &docker.HostConfig{NetworkMode: "bridge"}, NetworkSettings: &docker.NetworkSettings{}}
		mod(d)
		return d
	}
	tests := []struct {
		name   string
		d      *docker.Container
		target *docker.Container
		check  func(container.Container) bool
	}{
		{"paused is not running", base(func(d *docker.Container) { d.State = docker.State{Running: true, Paused: true} }), nil,
			func(c container.Container) bool { return !c.State.Running && c.State.Paused }},
		{"restarting is not running", base(func(d *docker.Container) { d.State = docker.State{Running: true, Restarting: true} }), nil,
			func(c container.Container) bool { return !c.State.Running }},
		{"exit code kept", base(func(d *docker.Container) { d.State = docker.State{ExitCode: 143} }), nil,
			func(c container.Container) bool { return c.State.ExitCode == 143 }},
		{"host mode", base(func(d *docker.Container) { d.HostConfig.NetworkMode = "host" }), nil,
			func(c container.Container) bool { return c.HostNetwork }},
		{"container mode takes the target's networks", base(func(d *docker.Container) { d.HostConfig.NetworkMode = "container:t" }),
			&docker.Container{HostConfig: &docker.HostConfig{NetworkMode: "bridge"}, NetworkSettings: &docker.NetworkSettings{Networks: map[string]docker.ContainerNetwork{"bridge": {IPAddress: "172.17.0.9"}}}},
			func(c container.Container) bool {
				return !c.HostNetwork && len(c.Networks) == 1 && c.Networks[0].IP == "172.17.0.9"
			}},
		{"container mode on a host target", base(func(d *docker.Container) { d.HostConfig.NetworkMode = "container:t" }),
			&docker.Container{HostConfig: &docker.HostConfig{NetworkMode: "host"}, NetworkSettings: &docker.NetworkSettings{}},
			func(c container.Container) bool { return c.HostNetwork }},
		{"container mode, target gone", base(func(d *docker.Container) { d.HostConfig.NetworkMode = "container:t" }), nil,
			func(c container.Container) bool { return len(c.Networks) == 0 }},
		{"nil config and settings", &docker.Container{ID: "y"}, nil,
			func(c container.Container) bool { return c.ID == "y" && len(c.Ports) == 0 }},
	}
	for _, tt := range tests {
		if got := FromDocker(tt.d, tt.target); !tt.check(got) {
			t.Errorf("%s: %+v", tt.name, got)
		}
	}
}

func TestHintFor(t *testing.T) {
	ev := func(typ, action, id string, attrs map[string]string) eventMsg {
		var e eventMsg
		e.Type, e.Action, e.Actor.ID, e.Actor.Attributes = typ, action, id, attrs
		return e
	}
	tests := []struct {
		in     eventMsg
		want   string
		isHint bool
	}{
		{ev("container", "start", "c1", nil), "c1", true},
		{ev("container", "die", "c1", nil), "c1", true},
		{ev("container", "destroy", "c1", nil), "c1", true},
		{ev("container", "health_status: healthy", "c1", nil), "c1", true},
		{ev("container", "rename", "c1", nil), "c1", true},
		{ev("container", "exec_start: /bin/check", "c1", nil), "", false},
		{ev("container", "create", "c1", nil), "", false},
		{ev("network", "connect", "n1", map[string]string{"container": "c2"}), "c2", true},
		{ev("network", "disconnect", "n1", map[string]string{"container": "c2"}), "c2", true},
		{ev("network", "create", "n1", nil), "", false},
		{ev("image", "pull", "i", nil), "", false},
	}
	for _, tt := range tests {
		got, ok := hintFor(tt.in)
		if ok != tt.isHint || got.ContainerID != tt.want {
			t.Errorf("hintFor(%s %s) = %+v, %v", tt.in.Type, tt.in.Action, got, ok)
		}
		if action, _, _ := strings.Cut(tt.in.Action, ":"); ok && got.Type != action {
			t.Errorf("hintFor(%s %s).Type = %q, want %q", tt.in.Type, tt.in.Action, got.Type, action)
		}
	}
}

func TestHintForDrain(t *testing.T) {
	ev := func(action string, attrs map[string]string) eventMsg {
		var e eventMsg
		e.Type, e.Action, e.Actor.ID, e.Actor.Attributes = "container", action, "c1", attrs
		return e
	}
	tests := []struct {
		in    eventMsg
		drain bool
	}{
		{ev("kill", map[string]string{"signal": "15"}), true},
		{ev("kill", map[string]string{"signal": "SIGTERM"}), true},
		{ev("kill", map[string]string{"signal": "9"}), false},
		{ev("kill", map[string]string{"signal": "1"}), false},
		{ev("stop", nil), true},
		{ev("die", nil), false},
		{ev("start", nil), false},
	}
	for _, tt := range tests {
		got, ok := hintFor(tt.in)
		if !ok || got.ContainerID != "c1" || got.Drain != tt.drain {
			t.Errorf("hintFor(%s %v) = %+v, %v; want drain %t", tt.in.Action, tt.in.Actor.Attributes, got, ok, tt.drain)
		}
	}
}

func TestFromDockerHealth(t *testing.T) {
	d := &docker.Container{ID: "c1", Name: "/a"}
	d.State.Running = true
	d.State.Health.Status = "starting"
	if got := FromDocker(d, nil).State.Health; got != "starting" {
		t.Errorf("health %q, want starting", got)
	}
	d.State.Health.Status = ""
	if got := FromDocker(d, nil).State.Health; got != "" {
		t.Errorf("health %q, want none", got)
	}
}

func TestBaseURL(t *testing.T) {
	tests := []struct {
		endpoint string
		tls      bool
		want     string
	}{
		{"unix:///var/run/docker.sock", false, "http://docker"},
		{"tcp://10.0.0.1:2375", false, "http://10.0.0.1:2375"},
		{"tcp://10.0.0.1:2376", true, "https://10.0.0.1:2376"},
		{"https://docker.example:2376", false, "https://docker.example:2376"},
	}
	for _, tt := range tests {
		if got, err := baseURL(tt.endpoint, tt.tls); got != tt.want || err != nil {
			t.Errorf("baseURL(%q) = %q, %v", tt.endpoint, got, err)
		}
	}
	if _, err := baseURL("npipe:////./pipe/docker", false); err == nil {
		t.Error("npipe accepted")
	}
}

// TestAgainstRealDocker exercises list, inspect, not-found, the network
// rules and the event stream on the real engine.
func TestAgainstRealDocker(t *testing.T) {
	testenv.Docker(t)
	src, err := New("", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	name, err := src.NodeName(ctx)
	if err != nil || name == "" {
		t.Fatalf("NodeName = %q, %v", name, err)
	}

	events := make(chan container.Event, 100)
	watchDone := make(chan error, 1)
	wctx, stopWatch := context.WithCancel(ctx)
	go func() { watchDone <- src.Watch(wctx, events) }()
	defer func() {
		stopWatch()
		if err := <-watchDone; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v", err)
		}
	}()
	select {
	case ev := <-events:
		if !ev.Resync {
			t.Fatalf("first event %+v, want a resync hint", ev)
		}
	case <-ctx.Done():
		t.Fatal("no resync hint on connect")
	}

	net := testenv.CreateNetwork(t)
	ctr := testenv.RunContainer(t, testenv.RunOptions{Network: net.Name, Ports: []string{"8080"}, Labels: map[string]string{"SERVICE_NAME": "x"}})
	waitHint(t, ctx, events, ctr.ID)

	c, err := src.Inspect(ctx, ctr.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !c.State.Running || c.Labels["SERVICE_NAME"] != "x" || c.NetworkMode != net.Name {
		t.Errorf("inspected %+v", c)
	}
	if len(c.Networks) != 1 || c.Networks[0].Name != net.Name || c.Networks[0].IP == "" {
		t.Errorf("networks %+v", c.Networks)
	}
	if len(c.Ports) != 1 || c.Ports[0].Port != 8080 || len(c.Ports[0].Bindings) != 1 || c.Ports[0].Bindings[0].HostIP != "127.0.0.1" {
		t.Errorf("ports %+v", c.Ports)
	}

	// A sidecar in the first container's network namespace.
	side := testenv.RunContainer(t, testenv.RunOptions{Network: "container:" + ctr.ID, Env: map[string]string{"PORT": "9090"}})
	sc, err := src.Inspect(ctx, side.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Networks) != 1 || sc.Networks[0].IP != c.Networks[0].IP {
		t.Errorf("sidecar networks %+v, want the target's %+v", sc.Networks, c.Networks)
	}

	list, err := src.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range list {
		found = found || (s.ID == ctr.ID && s.Running)
	}
	if !found {
		t.Error("running container not listed")
	}

	testenv.RemoveContainer(testenv.Docker(t), side.ID)
	testenv.RemoveContainer(testenv.Docker(t), ctr.ID)
	waitHint(t, ctx, events, ctr.ID)
	if _, err := src.Inspect(ctx, ctr.ID); !errors.Is(err, container.ErrNotFound) {
		t.Errorf("inspect of a removed container: %v, want ErrNotFound", err)
	}
}

func waitHint(t *testing.T, ctx context.Context, events <-chan container.Event, id string) {
	t.Helper()
	for {
		select {
		case ev := <-events:
			if ev.ContainerID == id {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no hint for %s", id)
		}
	}
}

// TestDefaultEndpointFallsBackToTmpSocket: registrator's documented run
// line mounts the engine's socket at /tmp/docker.sock; with DOCKER_HOST
// unset and no standard socket, that one is used. The real engine sits
// behind a symlink in a temp dir, as a bind mount would show it.
func TestDefaultEndpointFallsBackToTmpSocket(t *testing.T) {
	ep := testenv.Docker(t).Endpoint()
	real, ok := strings.CutPrefix(ep, "unix://")
	testenv.Need(t, ok, fmt.Sprintf("a Docker Engine on a unix socket (it is at %s)", ep))
	dir := t.TempDir()
	standard, fallback := filepath.Join(dir, "run-docker.sock"), filepath.Join(dir, "docker.sock")

	if got := DefaultEndpoint("", standard, fallback); got != "" {
		t.Errorf("no socket at all: %q, want the library default", got)
	}
	if err := os.Symlink(real, fallback); err != nil {
		t.Fatal(err)
	}
	got := DefaultEndpoint("", standard, fallback)
	if got != "unix://"+fallback {
		t.Fatalf("standard socket absent: %q, want unix://%s", got, fallback)
	}
	src, err := New(got, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := src.Ping(ctx); err != nil {
		t.Fatalf("engine through %s: %v", fallback, err)
	}
	if _, err := src.List(ctx); err != nil {
		t.Fatalf("list through %s: %v", fallback, err)
	}

	if got := DefaultEndpoint("tcp://10.0.0.1:2375", standard, fallback); got != "" {
		t.Errorf("DOCKER_HOST set: %q, want it to win", got)
	}
	if err := os.Symlink(real, standard); err != nil {
		t.Fatal(err)
	}
	if got := DefaultEndpoint("", standard, fallback); got != "" {
		t.Errorf("standard socket present: %q, want it to win", got)
	}
	// Not a socket: ignored.
	notSock := filepath.Join(dir, "plain")
	if err := os.WriteFile(notSock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := DefaultEndpoint("", filepath.Join(dir, "absent"), notSock); got != "" {
		t.Errorf("a plain file as fallback: %q", got)
	}
}
