package proxy

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestPollUntilReportsItsTimeoutWhenACheckIsCutShort: a check talking to
// the proxy's socket when the poll's time runs out fails with the socket's
// "i/o timeout", not context.DeadlineExceeded. The poll must still report
// its own timeout, or a drain that took too long reads as a broken socket
// (the CI failure of TestHAProxyPatchDrainBound).
func TestPollUntilReportsItsTimeoutWhenACheckIsCutShort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		err := pollUntil(t.Context(), time.Second, func(ctx context.Context) (bool, error) {
			calls++
			if calls < 3 {
				return false, nil
			}
			<-ctx.Done() // the socket's deadline is the poll's
			return false, &net.OpError{Op: "write", Net: "unix", Err: os.ErrDeadlineExceeded}
		})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("pollUntil = %v, want context.DeadlineExceeded", err)
		}
		if !strings.Contains(err.Error(), "i/o timeout") {
			t.Errorf("pollUntil = %v, want the check's own error kept", err)
		}
	})
}

// A check failing before the deadline is a failure, not a timeout.
func TestPollUntilPassesAFailureOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		broken := errors.New("socket gone")
		err := pollUntil(t.Context(), time.Second, func(context.Context) (bool, error) { return false, broken })
		if err != broken {
			t.Fatalf("pollUntil = %v, want %v as it is", err, broken)
		}
	})
}

// lateContext has a deadline that has passed while its Err is still nil:
// the moment between a deadline and the timer that marks the context done,
// in which a socket given the same deadline has already timed out.
type lateContext struct{ context.Context }

func (lateContext) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

// TestPollUntilReportsADeadlineItsTimerHasNotMarkedYet: the socket's read
// deadline and the poll's context share one instant, and the socket may
// see it first. Its "i/o timeout" is then still the poll's timeout (the
// second CI failure of TestHAProxyPatchDrainBound, under load).
func TestPollUntilReportsADeadlineItsTimerHasNotMarkedYet(t *testing.T) {
	err := pollUntil(lateContext{context.Background()}, time.Second, func(ctx context.Context) (bool, error) {
		if ctx.Err() != nil {
			t.Fatal("the test needs a context not yet marked done")
		}
		return false, &net.OpError{Op: "read", Net: "unix", Err: os.ErrDeadlineExceeded}
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("pollUntil = %v, want context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "i/o timeout") {
		t.Errorf("pollUntil = %v, want the check's own error kept", err)
	}
}
