// Package membership decides, from two rendered configs of one proxy,
// whether they differ only in the servers of pools that exist in both
// (nginx upstreams, HAProxy backends, Caddy reverse_proxy upstreams) and,
// when they do, what each changed pool must hold. It is pure: bytes in,
// decisions out. Package proxy applies a Delta through the proxy's own
// runtime interface, and the supervisor reloads whenever Structural says
// so, so the file on disk always equals what the proxy runs.
package membership

import "fmt"

// Server is one member of a pool as the config names it.
type Server struct {
	Name   string // the proxy's name for it (HAProxy server name); "" where the proxy has none
	Addr   string // host:port as written (IPv6 in brackets)
	Weight int    // 0: the proxy's default
	Down   bool   // configured out of rotation (nginx down, HAProxy disabled)
	Backup bool
}

// Pool is a pool whose members changed, with its complete new member list
// in config order.
type Pool struct {
	Name    string
	Servers []Server
	Old     []Server // the members the running config gives it
}

// Delta is a membership-only change: the pools whose members changed.
// Pools absent from it are unchanged.
type Delta struct {
	Pools []Pool
}

// Empty reports whether nothing changed.
func (d Delta) Empty() bool { return len(d.Pools) == 0 }

// Structural says why a change cannot be applied at runtime. It is not a
// failure: the supervisor reloads, and logs Reason at debug level.
type Structural struct{ Reason string }

func (s *Structural) Error() string { return fmt.Sprintf("structural change: %s", s.Reason) }

// structural is a shorthand for the parsers.
func structural(format string, args ...any) error {
	return &Structural{Reason: fmt.Sprintf(format, args...)}
}
