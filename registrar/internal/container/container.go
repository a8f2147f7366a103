// Package container is registrar's own model of a Docker container: only
// the facts the service rules need, in plain sorted values, so the rules can
// be tested without Docker. The docker adapter fills it from an inspect.
package container

import (
	"errors"
	"strings"
	"time"
)

// ErrNotFound is returned by a container source when the container no
// longer exists; the reconciler then removes every service it owned.
var ErrNotFound = errors.New("container not found")

// Container is one inspected container.
type Container struct {
	ID    string
	Name  string // without Docker's leading "/"
	Image string // as configured, e.g. "reg:5000/team/app:1.2"

	Env    []string          // "KEY=VALUE", in the order Docker reports them
	Labels map[string]string // may be nil

	State State

	// NetworkMode is Docker's HostConfig.NetworkMode: "bridge", "host",
	// "none", "container:<id>", "default" or a user network name.
	NetworkMode string
	// HostNetwork is true when the container shares the host's network
	// stack, directly or through a "container:<id>" whose target is host.
	HostNetwork bool
	// Networks the container (or the container whose namespace it shares)
	// is attached to, sorted by name.
	Networks []Network
	// Ports are the exposed and published ports, sorted by number then
	// protocol.
	Ports []Port

	// Inspect is the raw inspect document, the data of registrator's
	// -tags Go templates. It is opaque here.
	Inspect any
}

// State is the part of Docker's state that decides registration.
type State struct {
	Running   bool // running and not paused
	Paused    bool
	ExitCode  int
	OOMKilled bool
	// Health is Docker's HEALTHCHECK state: "starting", "healthy",
	// "unhealthy", or "" when the container has none.
	Health string
	// StartedAt tells one run from the next: a drain ends when the
	// container runs again after it.
	StartedAt time.Time
}

// Network is one attachment of the container.
type Network struct {
	Name string
	IP   string // IPv4, may be empty
	IPv6 string // global IPv6, may be empty
}

// Port is one container port with its host bindings (empty when only
// exposed).
type Port struct {
	Port     int
	Proto    string // "tcp", "udp" or "sctp"
	Bindings []Binding
}

// Binding is one host binding of a container port.
type Binding struct {
	HostIP   string // "" and "0.0.0.0" and "::" mean every address
	HostPort int
}

// Published reports whether the port is bound on the host.
func (p Port) Published() bool { return len(p.Bindings) > 0 }

// Summary is what a cheap listing tells: enough to know which containers
// exist and which need an inspect.
type Summary struct {
	ID      string
	Running bool
}

// Event is a hint from the Docker event stream. Hints are never trusted:
// each one only makes the reconciler read the container's real state.
type Event struct {
	// ContainerID names the container whose state may have changed.
	ContainerID string
	// Resync asks for a full resync: the stream was (re)connected and
	// events may have been missed meanwhile.
	Resync bool
	// Drain says the container was told to stop (SIGTERM, docker stop):
	// its services leave the rotation now, before it dies.
	Drain bool
	// Type is the Docker action that sent the hint (start, die, kill,
	// connect, health_status, ...), for metrics; empty for Resync.
	Type string
}

// ShortID is the 12-character form used in logs and by the docker CLI.
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// BaseImageName is registrator's default service name: the image name
// without registry, path, tag or digest ("reg:5000/team/app:1.2" -> "app").
func BaseImageName(image string) string {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndexByte(image, '/'); i >= 0 {
		image = image[i+1:]
	}
	if i := strings.IndexByte(image, ':'); i >= 0 {
		image = image[:i]
	}
	return image
}
