package reconcile

import "time"

// Recorder is told what the loop does, for metrics. The loop calls it from
// its own goroutine only (never from a worker); an implementation must
// still be safe to read from another goroutine (a scrape). The state the
// loop holds (containers, services, retries, drains, checks, takeovers)
// is on Status instead: a Recorder only sees what Status cannot show.
type Recorder interface {
	// Event counts a Docker event received, by its action (start, die,
	// kill, connect, health_status, ...).
	Event(typ string)
	// Reconnect counts an event-stream reconnect: a Resync hint after
	// the first one.
	Reconnect()
	// Resync reports a full resync that ended, how long it took and
	// whether it succeeded.
	Resync(d time.Duration, ok bool)
	// Registered counts a service registered (or updated) in Consul, by
	// reason: Reason* below.
	Registered(reason string)
	// Deregistered counts a service removed from Consul, by reason.
	Deregistered(reason string)
	// ConsulError counts a failed Consul call (list, register,
	// deregister, check update, maintenance), refusals of a takeover not
	// included.
	ConsulError()
}

// Reasons of registrations and deregistrations.
const (
	// ReasonEvent: a re-read of the container after a Docker event.
	ReasonEvent = "event"
	// ReasonRetry: a re-read retrying a failed inspect or Consul write.
	ReasonRetry = "retry"
	// ReasonResync: a full resync (start-up, stream reconnect, periodic,
	// after a Consul outage) found Consul differing.
	ReasonResync = "resync"
	// ReasonRemoved: the container no longer exists.
	ReasonRemoved = "removed"
	// ReasonStopped: the container stopped and --deregister removes its
	// services.
	ReasonStopped = "stopped"
	// ReasonUnwanted: the container runs but no longer asks for the
	// service.
	ReasonUnwanted = "unwanted"
	// ReasonShutdown: DeregisterAll (--on-shutdown=deregister).
	ReasonShutdown = "shutdown"
)

// RegisterReasons and DeregisterReasons are every reason the loop uses,
// so a metrics exporter can show each one from the start.
var (
	RegisterReasons   = []string{ReasonEvent, ReasonRetry, ReasonResync}
	DeregisterReasons = []string{ReasonRemoved, ReasonStopped, ReasonUnwanted, ReasonShutdown}
)

type nopRecorder struct{}

func (nopRecorder) Event(string)               {}
func (nopRecorder) Reconnect()                 {}
func (nopRecorder) Resync(time.Duration, bool) {}
func (nopRecorder) Registered(string)          {}
func (nopRecorder) Deregistered(string)        {}
func (nopRecorder) ConsulError()               {}
