// Package docker adapts the Docker Engine (through go-dockerclient) to
// registrar's container model: list and inspect, and an event stream that
// reconnects with backoff forever and asks for a full resync after every
// (re)connect, because events missed meanwhile are gone.
//
// The event stream is read here, not through go-dockerclient's listener:
// that one hands each event to a new goroutine (no order), drops events
// when the listener is slow, and gives up after five reconnects.
package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	docker "github.com/fsouza/go-dockerclient"

	"github.com/switchyard/switchyard/registrar/internal/container"
	"github.com/switchyard/switchyard/registrar/internal/health"
)

// Source reads containers from one Docker engine.
type Source struct {
	client *docker.Client
	base   string // URL prefix for requests we make ourselves
	log    *slog.Logger

	// Reconnect backoff of the event stream.
	MinBackoff, MaxBackoff time.Duration
	// Timeout bounds the wait for the event stream's response headers (a
	// hung engine accepts the connection and never answers). Other calls
	// take their deadline from their context.
	Timeout time.Duration
}

// The engine's standard socket, and where registrator's documented run
// line mounts it (--volume=/var/run/docker.sock:/tmp/docker.sock).
const (
	StandardSocket = "/var/run/docker.sock"
	FallbackSocket = "/tmp/docker.sock"
)

// DefaultEndpoint is the endpoint used when none is given: DOCKER_HOST if
// set, else the standard socket, else the fallback socket if that one
// exists. "" means go-dockerclient's own default (DOCKER_HOST or the
// standard socket, with DOCKER_TLS_VERIFY and DOCKER_API_VERSION).
func DefaultEndpoint(dockerHost, standard, fallback string) string {
	if dockerHost != "" {
		return ""
	}
	if _, err := os.Stat(standard); err == nil {
		return ""
	}
	if fi, err := os.Stat(fallback); err == nil && fi.Mode().Type() == os.ModeSocket {
		return "unix://" + fallback
	}
	return ""
}

// New connects to endpoint ("" = DOCKER_HOST, else the standard socket,
// else /tmp/docker.sock when only that one exists).
func New(endpoint string, log *slog.Logger) (*Source, error) {
	if endpoint == "" {
		endpoint = DefaultEndpoint(os.Getenv("DOCKER_HOST"), StandardSocket, FallbackSocket)
	}
	var (
		c   *docker.Client
		err error
	)
	if endpoint == "" {
		c, err = docker.NewClientFromEnv()
	} else {
		c, err = docker.NewClient(endpoint)
	}
	if err != nil {
		return nil, fmt.Errorf("docker client for %q: %w", endpoint, err)
	}
	// go-dockerclient dials the socket without a context: bound the
	// connect (a hung engine's full backlog blocks it).
	c.Dialer = &net.Dialer{Timeout: 10 * time.Second}
	// go-dockerclient disables keep-alive by default: a resync would open a
	// connection per inspect. Reuse connections to the socket.
	c.WithTransport(func() *http.Transport {
		return &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second}
	})
	base, err := baseURL(c.Endpoint(), c.TLSConfig != nil)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{client: c, base: base, log: log, MinBackoff: 100 * time.Millisecond, MaxBackoff: 10 * time.Second, Timeout: 10 * time.Second}, nil
}

// baseURL turns a Docker endpoint into an HTTP URL prefix. Unix sockets
// get a dummy host: the client's transport dials the socket whatever the
// host is.
func baseURL(endpoint string, tls bool) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", fmt.Errorf("docker endpoint %q: %w", endpoint, err)
	}
	switch u.Scheme {
	case "unix":
		return "http://docker", nil
	case "tcp", "http", "https":
		scheme := "http"
		if tls || u.Scheme == "https" {
			scheme = "https"
		}
		return scheme + "://" + u.Host, nil
	}
	return "", fmt.Errorf("docker endpoint %q: unsupported scheme %q", endpoint, u.Scheme)
}

// Client exposes the underlying client (for tests and the benchmark).
func (s *Source) Client() *docker.Client { return s.client }

// NodeName returns the engine's name (docker info .Name): stable across
// restarts and re-creations of a registrar container, unlike its hostname.
func (s *Source) NodeName(ctx context.Context) (string, error) {
	var info struct{ Name string }
	if err := s.getJSON(ctx, "/info", &info); err != nil {
		return "", fmt.Errorf("docker info: %w", err)
	}
	if info.Name == "" {
		return "", errors.New("docker info: engine has no name")
	}
	return info.Name, nil
}

func (s *Source) getJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := s.client.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// List returns every container, running or not.
func (s *Source) List(ctx context.Context) ([]container.Summary, error) {
	apis, err := s.client.ListContainers(docker.ListContainersOptions{All: true, Context: ctx})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]container.Summary, 0, len(apis))
	for _, a := range apis {
		out = append(out, container.Summary{ID: a.ID, Running: a.State == "running"})
	}
	return out, nil
}

// Inspect reads one container. A container sharing another's network
// namespace ("container:<id>") gets that container's networks.
func (s *Source) Inspect(ctx context.Context, id string) (container.Container, error) {
	d, err := s.inspect(ctx, id)
	if err != nil {
		return container.Container{}, err
	}
	var target *docker.Container
	if d.HostConfig != nil {
		if tid, ok := strings.CutPrefix(d.HostConfig.NetworkMode, "container:"); ok {
			target, err = s.inspect(ctx, tid)
			if err != nil && !errors.Is(err, container.ErrNotFound) {
				return container.Container{}, err
			}
		}
	}
	return FromDocker(d, target), nil
}

func (s *Source) inspect(ctx context.Context, id string) (*docker.Container, error) {
	d, err := s.client.InspectContainerWithOptions(docker.InspectContainerOptions{ID: id, Context: ctx})
	if err != nil {
		var nsc *docker.NoSuchContainer
		if errors.As(err, &nsc) {
			return nil, fmt.Errorf("inspect container %s: %w", container.ShortID(id), container.ErrNotFound)
		}
		return nil, fmt.Errorf("inspect container %s: %w", container.ShortID(id), err)
	}
	return d, nil
}

// hintActions are the container events after which its registration may
// differ. exec_* (health checks run them every few seconds), attach,
// create, resize and the like change nothing.
var hintActions = map[string]bool{
	"start": true, "die": true, "stop": true, "kill": true, "destroy": true,
	"pause": true, "unpause": true, "rename": true, "restart": true,
	"update": true, "oom": true, "health_status": true,
}

// hintFor maps a Docker event to a hint, or ok false if it is no hint.
func hintFor(ev eventMsg) (container.Event, bool) {
	switch ev.Type {
	case "container":
		action, _, _ := strings.Cut(ev.Action, ":") // "health_status: healthy"
		if hintActions[action] && ev.Actor.ID != "" {
			// docker stop sends SIGTERM (a kill event) and waits: that
			// is the drain window. The stop event itself comes after
			// die; it still drains, for engines that send it first.
			drain := action == "stop" || (action == "kill" && health.StopSignal(ev.Actor.Attributes["signal"]))
			return container.Event{ContainerID: ev.Actor.ID, Drain: drain, Type: action}, true
		}
	case "network":
		if ev.Action == "connect" || ev.Action == "disconnect" {
			if id := ev.Actor.Attributes["container"]; id != "" {
				return container.Event{ContainerID: id, Type: ev.Action}, true
			}
		}
	}
	return container.Event{}, false
}

type eventMsg struct {
	Type   string `json:"Type"`
	Action string `json:"Action"`
	Actor  struct {
		ID         string            `json:"ID"`
		Attributes map[string]string `json:"Attributes"`
	} `json:"Actor"`
}

// Watch streams hints to out until ctx is done. It never gives up: a
// failed or closed stream is reopened after a capped exponential backoff,
// and each successful (re)connect sends a Resync hint.
func (s *Source) Watch(ctx context.Context, out chan<- container.Event) error {
	backoff := s.MinBackoff
	for {
		connected, err := s.stream(ctx, out)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if connected {
			backoff = s.MinBackoff // it worked for a while: start over
		}
		s.log.Warn("docker event stream lost; reconnecting", "error", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, s.MaxBackoff)
	}
}

// stream reads one event connection until it fails. connected reports
// whether the connection was established.
func (s *Source) stream(ctx context.Context, out chan<- container.Event) (connected bool, err error) {
	filters := url.QueryEscape(`{"type":["container","network"]}`)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, s.base+"/events?filters="+filters, nil)
	if err != nil {
		return false, err
	}
	// The engine answers the headers at once; events may then be rare, so
	// only the wait for the headers has a deadline.
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	timer := time.AfterFunc(timeout, cancel)
	resp, err := s.client.HTTPClient.Do(req)
	if !timer.Stop() && ctx.Err() == nil {
		if err == nil {
			resp.Body.Close()
		}
		return false, fmt.Errorf("GET /events: no answer within %s", timeout)
	}
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("GET /events: %s", resp.Status)
	}
	send := func(ev container.Event) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	// Subscribed: whatever happened before is read by a full resync.
	if !send(container.Event{Resync: true}) {
		return true, ctx.Err()
	}
	s.log.Debug("docker event stream connected")
	dec := json.NewDecoder(resp.Body)
	for {
		var ev eventMsg
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("closed by the engine")
			}
			return true, err
		}
		if h, ok := hintFor(ev); ok && !send(h) {
			return true, ctx.Err()
		}
	}
}

// FromDocker maps an inspect document to our model. target is the
// container whose network namespace d shares, or nil.
func FromDocker(d *docker.Container, target *docker.Container) container.Container {
	c := container.Container{
		ID:      d.ID,
		Name:    strings.TrimPrefix(d.Name, "/"),
		Inspect: d,
		State: container.State{
			Running:   d.State.Running && !d.State.Paused && !d.State.Restarting,
			Paused:    d.State.Paused,
			ExitCode:  d.State.ExitCode,
			OOMKilled: d.State.OOMKilled,
			Health:    d.State.Health.Status,
			StartedAt: d.State.StartedAt,
		},
	}
	if d.Config != nil {
		c.Image = d.Config.Image
		c.Env = d.Config.Env
		c.Labels = d.Config.Labels
	}
	if d.HostConfig != nil {
		c.NetworkMode = d.HostConfig.NetworkMode
	}
	c.HostNetwork = c.NetworkMode == "host"
	netSrc := d
	if strings.HasPrefix(c.NetworkMode, "container:") {
		netSrc = target
		if target != nil && target.HostConfig != nil && target.HostConfig.NetworkMode == "host" {
			c.HostNetwork = true
		}
	}
	if netSrc != nil && netSrc.NetworkSettings != nil {
		for name, n := range netSrc.NetworkSettings.Networks {
			c.Networks = append(c.Networks, container.Network{Name: name, IP: n.IPAddress, IPv6: n.GlobalIPv6Address})
		}
	}
	sortNetworks(c.Networks)
	c.Ports = ports(d)
	return c
}

// ports merges exposed ports (Config) with bindings (NetworkSettings).
func ports(d *docker.Container) []container.Port {
	byKey := map[docker.Port]*container.Port{}
	add := func(p docker.Port) *container.Port {
		if cp, ok := byKey[p]; ok {
			return cp
		}
		n, proto, ok := parsePort(string(p))
		if !ok {
			return nil
		}
		cp := &container.Port{Port: n, Proto: proto}
		byKey[p] = cp
		return cp
	}
	if d.Config != nil {
		for p := range d.Config.ExposedPorts {
			add(p)
		}
	}
	if d.NetworkSettings != nil {
		for p, bs := range d.NetworkSettings.Ports {
			cp := add(p)
			if cp == nil {
				continue
			}
			for _, b := range bs {
				hp, err := parseUint16(b.HostPort)
				if err != nil {
					continue
				}
				cp.Bindings = append(cp.Bindings, container.Binding{HostIP: b.HostIP, HostPort: hp})
			}
		}
	}
	out := make([]container.Port, 0, len(byKey))
	for _, cp := range byKey {
		out = append(out, *cp)
	}
	sortPorts(out)
	return out
}

func parsePort(s string) (int, string, bool) {
	num, proto, ok := strings.Cut(s, "/")
	if !ok {
		proto = "tcp"
	}
	n, err := parseUint16(num)
	if err != nil {
		return 0, "", false
	}
	return n, strings.ToLower(proto), true
}

func parseUint16(s string) (int, error) {
	var n int
	if s == "" || len(s) > 5 {
		return 0, fmt.Errorf("port %q", s)
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("port %q", s)
		}
		n = n*10 + int(r-'0')
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q", s)
	}
	return n, nil
}

// Ping checks that the engine answers.
func (s *Source) Ping(ctx context.Context) error {
	if err := s.client.PingWithContext(ctx); err != nil {
		return fmt.Errorf("docker ping: %w", err)
	}
	return nil
}
