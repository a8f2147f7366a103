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
