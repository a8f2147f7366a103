// Package prio marks work that can wait for the proxy: a validation run
// after a change is already served (pipeline.Target.RuntimeOnly) competes
// for CPU with the proxy's workers serving that change, so the processes
// it starts run at a lower priority.
package prio

import (
	"context"
	"syscall"
)

type backgroundKey struct{}

// Niceness is the nice value background processes get (0 is normal, 19
// the lowest priority).
const Niceness = 10

// Background marks ctx as background work.
func Background(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

// IsBackground reports whether ctx was marked by Background.
func IsBackground(ctx context.Context) bool {
	v, _ := ctx.Value(backgroundKey{}).(bool)
	return v
}

// Lower gives process pid the background niceness when ctx is background
// work; it is best effort (the process may have exited already).
func Lower(ctx context.Context, pid int) {
	if IsBackground(ctx) {
		_ = syscall.Setpriority(syscall.PRIO_PROCESS, pid, Niceness)
	}
}
