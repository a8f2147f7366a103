// Package health decides, from plain values, what Docker's own health
// state and a container's drain setting mean for its Consul services: the
// status of the TTL check that mirrors a Docker HEALTHCHECK, whether the
// services are registered yet, and whether a stopping container is put
// into maintenance first. It is pure; the reconciler and the service rules
// feed it and act on its answers.
package health

import (
	"fmt"
	"strings"
	"time"
)

// Docker's health states (State.Health.Status). "" means the container has
// no HEALTHCHECK; Docker says "none" for that too.
const (
	Starting  = "starting"
	Healthy   = "healthy"
	Unhealthy = "unhealthy"
)

// Consul check statuses.
const (
	Passing  = "passing"
	Warning  = "warning"
	Critical = "critical"
)

// Policy is the registrar-wide part (flags).
type Policy struct {
	// WaitHealthy registers a container's services only once Docker no
	// longer says "starting" (--wait-healthy).
	WaitHealthy bool
	// Starting is the check status while Docker says "starting":
	// critical (default) or warning.
	Starting string
	// TTL of the mirrored check; the registrar refreshes it well before.
	TTL time.Duration
	// DeregisterAfter lets Consul reap the services of a host whose
	// registrar stopped refreshing (DeregisterCriticalServiceAfter).
	DeregisterAfter time.Duration
	// Drain puts a container's services into maintenance on SIGTERM
	// (--drain); SERVICE_DRAIN overrides it per container.
	Drain bool
}

// Keys are a container's raw per-container settings; "" means unset.
type Keys struct {
	Starting    string // SERVICE_HEALTH_STARTING: critical or warning
	WaitHealthy string // SERVICE_WAIT_HEALTHY: a boolean
	Drain       string // SERVICE_DRAIN: a boolean
}

// Decision is what a Docker health state asks of the services.
type Decision struct {
	Check    bool   // mirror the Docker health state in a TTL check
	Status   string // that check's status
	Register bool   // register the services at all
}

// Decide maps Docker's health state and the settings to a Decision. A bad
// key is reported and its default used.
func Decide(state string, p Policy, k Keys) (Decision, []error) {
	var errs []error
	if state == "" || state == "none" {
		return Decision{Register: true}, nil
	}
	wait, err := boolKey("SERVICE_WAIT_HEALTHY", k.WaitHealthy, p.WaitHealthy)
	if err != nil {
		errs = append(errs, err)
	}
	starting := p.Starting
	if starting == "" {
		starting = Critical
	}
	if v := strings.ToLower(strings.TrimSpace(k.Starting)); v != "" {
		if v == Critical || v == Warning {
			starting = v
		} else {
			errs = append(errs, fmt.Errorf("SERVICE_HEALTH_STARTING=%q: want critical or warning; using %s", k.Starting, starting))
		}
	}
	switch state {
	case Healthy:
		return Decision{Check: true, Status: Passing, Register: true}, errs
	case Starting:
		return Decision{Check: true, Status: starting, Register: !wait}, errs
	}
	// unhealthy, and any state a later Docker may add: not fit for traffic.
	return Decision{Check: true, Status: Critical, Register: true}, errs
}

// Drain reports whether a container is put into maintenance when it is
// told to stop.
func Drain(p Policy, k Keys) (bool, error) {
	return boolKey("SERVICE_DRAIN", k.Drain, p.Drain)
}

func boolKey(key, v string, def bool) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "":
		return def, nil
	case "1", "t", "true", "yes", "y", "on":
		return true, nil
	case "0", "f", "false", "no", "n", "off":
		return false, nil
	}
	return def, fmt.Errorf("%s=%q: not a boolean; using %t", key, v, def)
}

// StopSignal reports whether a Docker kill event's signal attribute asks
// the process to stop gracefully: SIGTERM, by number or by name. SIGKILL
// needs no drain (the process is gone at once) and other signals (SIGHUP
// for a reload) do not stop it.
func StopSignal(sig string) bool {
	switch strings.ToUpper(strings.TrimSpace(sig)) {
	case "15", "TERM", "SIGTERM":
		return true
	}
	return false
}
