// Package policy holds the renderer's decisions as pure state machines:
// the restart policy of a supervised proxy, recovery from a Consul outage,
// and the stale guard. Each takes events with the time they happened and
// answers with what to do; none does I/O, reads a clock or starts a
// goroutine, so each is tested alone under testing/synctest and the loop
// that drives them stays a dispatcher.
package policy
