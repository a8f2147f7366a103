package supervise

import (
	"strings"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/status"
)

// Throttling (issue 11): consul-template holds one blocking query, so one
// connection, per dependency. Past the agent's http_max_conns_per_client
// (200 by default, per client address) Consul answers new connections
// with 429 and closes them; every refused view retries on its own backoff.
// That is not an outage: Consul answers, a rebuilt runner would only ask
// again for everything at once, and the probe would be refused too.
const (
	// throttleWindow: a reset or EOF counts as a refusal only this soon
	// after a 429 (alone it is what a dying agent looks like too); and an
	// episode ends once a pass comes this long after the last refusal.
	// The readiness rule's window, so the loop ends an episode when
	// /ready stops counting it.
	throttleWindow = status.RefusedFor
	// consulLogEvery bounds the Consul error lines: one per backoff step,
	// not one per dependency per retry.
	consulLogEvery = time.Second
)

// reasonOutage counts errors that are not refusals, in the log line.
const reasonOutage = "error"

// throttle is a runner's view of Consul's refusals and the rate limit of
// the lines that report Consul errors. Only the loop's goroutine uses it.
type throttle struct {
	last429, lastRefusal time.Time
	lastLine             time.Time
	pending              map[string]int // errors since the last line, by reason
}

// classify says why Consul failed the runner: a status.Throttle* reason,
// or "" for anything else (an outage, a bad query).
func (t *throttle) classify(err error, now time.Time) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "Unexpected response code: 429"):
		t.last429 = now
	case strings.Contains(msg, "readLoopPeekFailLocked"):
		// Consul writes its 429 as soon as it accepts a connection over
		// the limit; Go's transport reads that before sending a request
		// as an unsolicited response and fails the request with this.
		t.last429 = now
	case isReset(msg) && !t.last429.IsZero() && now.Sub(t.last429) < throttleWindow:
		// The agent closes the connections it refuses; a write racing
		// the close shows as a reset, not as the 429.
	default:
		return ""
	}
	t.lastRefusal = now
	if strings.Contains(msg, "response code: 429") {
		return status.Throttle429
	}
	return status.ThrottleConnReset
}

func isReset(msg string) bool {
	for _, s := range []string{"connection reset by peer", ": EOF", "unexpected EOF", "broken pipe"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// note counts an error of reason and reports whether a line is due now,
// with the counts it covers (then reset).
func (t *throttle) note(reason string, now time.Time) (map[string]int, bool) {
	if t.pending == nil {
		t.pending = map[string]int{}
	}
	t.pending[reason]++
	if !t.lastLine.IsZero() && now.Sub(t.lastLine) < consulLogEvery {
		return nil, false
	}
	t.lastLine = now
	out := t.pending
	t.pending = nil
	return out, true
}

// over reports whether a refusal episode has ended, given the missing
// dependencies at a pass: every dependency has data, or the last refusal
// is long gone (a runner that never saw one does not end an episode it
// inherited with data still missing).
func (t *throttle) over(missing int, now time.Time) bool {
	if missing == 0 {
		return true
	}
	return !t.lastRefusal.IsZero() && now.Sub(t.lastRefusal) > throttleWindow
}

// firstLine keeps the message of a pkg/errors error without the stack
// that slog's %+v would print on every line.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
