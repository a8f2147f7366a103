package policy

import "time"

// Restarts is the restart policy of a supervised proxy. A death is an exit
// we did not ask for, or a restart that failed; a proxy that dies Max
// times within Window is given up on (the renderer exits, and its own
// supervisor, Docker or systemd, takes over). Between deaths the restart
// waits First, doubling per death in the window, up to Cap, so a proxy
// that cannot start does not spin.
type Restarts struct {
	Max         int
	Window      time.Duration
	First, Cap  time.Duration
	deathsSince []time.Time
}

// Default restart policy, documented in the README.
const (
	DefaultMaxDeaths    = 5
	DefaultDeathWindow  = time.Minute
	DefaultRestartFirst = 100 * time.Millisecond
	DefaultRestartCap   = 10 * time.Second
)

// NewRestarts returns the policy with defaults for zero fields.
func NewRestarts(max int, window time.Duration) *Restarts {
	if max <= 0 {
		max = DefaultMaxDeaths
	}
	if window <= 0 {
		window = DefaultDeathWindow
	}
	return &Restarts{Max: max, Window: window, First: DefaultRestartFirst, Cap: DefaultRestartCap}
}

// Restart is the policy's answer to a death.
type Restart struct {
	GiveUp bool          // Max deaths within Window: stop trying
	After  time.Duration // otherwise: restart after this long
	Deaths int           // deaths within the window, this one included
}

// Died records one death at now and says what to do.
func (r *Restarts) Died(now time.Time) Restart {
	kept := r.deathsSince[:0]
	for _, t := range r.deathsSince {
		if now.Sub(t) < r.Window {
			kept = append(kept, t)
		}
	}
	r.deathsSince = append(kept, now)
	n := len(r.deathsSince)
	if n >= r.Max {
		return Restart{GiveUp: true, Deaths: n}
	}
	after := r.First
	for i := 1; i < n && after < r.Cap; i++ {
		after *= 2
	}
	return Restart{After: min(after, r.Cap), Deaths: n}
}
