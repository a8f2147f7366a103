package supervise

import (
	"context"
	"time"
)

// armHold sets the hold timer to the next held render that wants Consul
// asked, unless an ask is in flight.
func (l *loop) armHold() {
	at, ok := l.o.Pipeline.NextHold()
	if !ok || l.asking {
		l.hold.Stop()
		return
	}
	l.hold.Reset(max(time.Until(at), 0))
}

// onHoldDue asks Consul, in a goroutine with a deadline, whether it has a
// leader, and brings the answer to every due hold there: the pipeline
// applies a hold only with a leader, and the write never blocks the loop.
func (l *loop) onHoldDue() error {
	asks := l.o.Pipeline.AskHolds(time.Now())
	if len(asks) == 0 {
		l.armHold()
		return nil
	}
	l.asking = true
	l.g.Go(func() error {
		ctx, cancel := context.WithTimeout(l.probeCtx, probeTimeout)
		err := l.o.ConsulUp(ctx)
		cancel()
		for dest, sum := range asks {
			l.o.Pipeline.Answer(dest, sum, err, time.Now())
		}
		l.holdDone <- struct{}{} // buffered; one ask at a time
		return nil
	})
	return nil
}

func (l *loop) onHoldAnswered() error {
	l.asking = false
	l.armHold()
	return nil
}
