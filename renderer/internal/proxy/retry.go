package proxy

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// errClass is what a failed call to a proxy's control channel (HAProxy's
// master CLI, Caddy's admin API) says about the proxy.
type errClass int

const (
	// transient: the proxy is there but did not answer this time (a
	// timeout, EAGAIN, a master busy re-executing, a 5xx): ask again.
	transient errClass = iota
	// absent: nobody listens (connection refused). A re-executing HAProxy
	// master refuses for a few hundred milliseconds, so ask again; if
	// nobody listens for the whole deadline, the proxy is not running.
	absent
	// gone: there is nothing to talk to (no socket file, our child has
	// exited): the proxy is not running.
	gone
	// permanent: asking again will not help.
	permanent
)

// Retry bounds: the first retry comes quickly (a re-exec takes
// milliseconds to a second), later ones back off so a slow proxy is not
// hammered. Each attempt gets a share of the deadline, so one hung
// attempt leaves time for another.
const (
	firstBackoff = 10 * time.Millisecond
	maxBackoff   = 200 * time.Millisecond
	minAttempt   = 250 * time.Millisecond
)

// retryTransient calls fn until it succeeds, fails for good, or ctx ends.
// A gone error, or an absent one that lasted until the deadline, wraps
// ErrNotRunning, so the caller knows there is nothing to reload. Any other
// failure is a plain error: the proxy is there and the reload is still
// owed.
func retryTransient(ctx context.Context, what string, fn func(ctx context.Context) error, classify func(error) errClass) error {
	total := DefaultTimeout
	if dl, ok := ctx.Deadline(); ok {
		total = time.Until(dl)
	}
	attempt := max(total/3, minAttempt)
	start := time.Now()
	t := time.NewTimer(time.Hour) // reset before every wait
	defer t.Stop()
	backoff := firstBackoff
	for tries := 1; ; tries++ {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		class := classify(err)
		switch class {
		case gone:
			return fmt.Errorf("%w: %s: %w", ErrNotRunning, what, err)
		case permanent:
			return fmt.Errorf("%s: %w", what, err)
		}
		t.Reset(backoff)
		select {
		case <-ctx.Done():
			if class == absent {
				return fmt.Errorf("%w: %s: nobody listened for %s: %w", ErrNotRunning, what, time.Since(start).Round(time.Millisecond), err)
			}
			return fmt.Errorf("%s: still failing after %d tries in %s: %w", what, tries, time.Since(start).Round(time.Millisecond), err)
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// classifyConn classifies a connection error for a proxy we do not run
// (external mode), where the socket is all we can see: a missing unix
// socket file means no master, a refusal may be a master re-executing,
// anything else is a proxy slow to answer.
func classifyConn(err error) errClass {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return gone
	case errors.Is(err, syscall.ECONNREFUSED):
		return absent
	}
	return transient
}
