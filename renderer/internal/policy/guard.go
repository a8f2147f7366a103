package policy

import (
	"os"
	"slices"
	"sort"
	"time"
)

// Counts is the stale guard's measure of a config: backend servers per
// block (an nginx upstream, an HAProxy backend), keyed by the block's
// name; a block present with no server has 0. Counting per block matters:
// after a Consul agent restart services come back one at a time, so a
// render can keep most servers of the file while one upstream loses all
// of its own.
type Counts map[string]int

// Total is the number of servers over all blocks.
func (c Counts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// Emptied returns, sorted, the blocks that had servers in before and have
// none, or are gone, in after.
func Emptied(before, after Counts) []string {
	var out []string
	for name, n := range before {
		if n > 0 && after[name] == 0 {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// Suspicious is the guard's rule: a render is suspicious when it removes
// more than maxRemoval of all servers, or empties (or drops) a block that
// had servers.
func Suspicious(before, after Counts, maxRemoval float64) (bool, []string) {
	emptied := Emptied(before, after)
	b, a := before.Total(), after.Total()
	removed := b - a
	frac := b > 0 && removed > 0 && float64(removed)/float64(b) > maxRemoval
	return frac || len(emptied) > 0, emptied
}

// Guard is the stale guard. Consul answering "no instances" during a
// leader election or an agent restart is the most reported outage of
// consul-template; a render that suddenly loses most backends, or all
// backends of one block, is held for HoldDown and applied only if it is
// still the latest render of its file then and Consul has a leader. The
// guard holds the bytes; the caller asks Consul and reports the answer.
type Guard struct {
	MaxRemoval float64       // 0 turns the guard off
	HoldDown   time.Duration // how long a suspicious render waits
	holds      map[string]*Hold
}

// Hold is a render the guard holds back from the live file.
type Hold struct {
	Contents      []byte
	Sum           [32]byte
	Perms         os.FileMode
	Since         time.Time // first suspicious render of this hold
	RetryAt       time.Time // after a leaderless answer: ask again then
	Before, After int       // servers in the live file and in the held render
	Emptied       []string
	asking        bool
}

// LeaderRetry is how long a hold waits after Consul said it has no leader.
const LeaderRetry = 5 * time.Second

// NewGuard returns a guard; maxRemoval 0 turns it off.
func NewGuard(maxRemoval float64, holdDown time.Duration) *Guard {
	return &Guard{MaxRemoval: maxRemoval, HoldDown: holdDown, holds: map[string]*Hold{}}
}

// On reports whether the guard judges renders at all.
func (g *Guard) On() bool { return g.MaxRemoval > 0 }

// Render is a validated render of dest that differs from the live file.
type Render struct {
	Contents []byte
	Sum      [32]byte
	Perms    os.FileMode
}

// Judge decides on r: apply it now (false), or hold it (true). A render
// that is not suspicious clears the hold of dest; a suspicious one joins
// it, keeping the hold's start so a stream of changes cannot hold forever.
// Even a due hold is not applied from here: only Answer, with Consul's
// word, applies one. fresh is true when the hold begins with r.
func (g *Guard) Judge(dest string, before, after Counts, r Render, now time.Time) (hold, fresh bool) {
	bad, emptied := Suspicious(before, after, g.MaxRemoval)
	if !g.On() || !bad {
		delete(g.holds, dest)
		return false, false
	}
	h := g.holds[dest]
	fresh = h == nil
	if fresh {
		h = &Hold{Since: now}
		g.holds[dest] = h
	}
	if h.Sum != r.Sum {
		h.asking = false // an answer about older bytes says nothing
	}
	h.Contents, h.Sum, h.Perms = r.Contents, r.Sum, r.Perms
	h.Before, h.After, h.Emptied = before.Total(), after.Total(), emptied
	return true, fresh
}

// Clear drops the hold of dest: a newer render made it moot, whatever
// became of that render (equal to the live file, rejected, failed to
// write). The live file stays; the older held bytes never go live.
func (g *Guard) Clear(dest string) { delete(g.holds, dest) }

// Held returns a copy of the hold of dest.
func (g *Guard) Held(dest string) (Hold, bool) {
	h, ok := g.holds[dest]
	if !ok {
		return Hold{}, false
	}
	c := *h
	c.Emptied = slices.Clone(h.Emptied)
	return c, true
}

// Next is when the earliest hold wants Consul asked.
func (g *Guard) Next() (time.Time, bool) {
	var next time.Time
	for _, h := range g.holds {
		if h.asking {
			continue
		}
		if at := h.due(g.HoldDown); next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next, !next.IsZero()
}

func (h *Hold) due(holdDown time.Duration) time.Time {
	at := h.Since.Add(holdDown)
	if h.RetryAt.After(at) {
		at = h.RetryAt
	}
	return at
}

// Ask returns the holds that are due at now, sorted by dest, with the sum
// of the bytes they hold, and marks them as asking: the caller asks Consul
// once for all of them and reports with Answer.
func (g *Guard) Ask(now time.Time) map[string][32]byte {
	out := map[string][32]byte{}
	for dest, h := range g.holds {
		if !h.asking && !now.Before(h.due(g.HoldDown)) {
			h.asking = true
			out[dest] = h.Sum
		}
	}
	return out
}

// Answer records Consul's answer about the hold of dest that held sum
// when asked (err nil: Consul has a leader). It returns the hold to apply
// now, if any. The hold stays until the caller reports the outcome with
// Clear: applied or failed, it is over either way, so a failing held
// render is never retried in a loop.
func (g *Guard) Answer(dest string, sum [32]byte, err error, now time.Time) (Hold, bool) {
	h, ok := g.holds[dest]
	if !ok || h.Sum != sum || !h.asking {
		return Hold{}, false // replaced or cleared while Consul was asked
	}
	h.asking = false
	if err != nil {
		h.RetryAt = now.Add(LeaderRetry)
		return Hold{}, false
	}
	return *h, true
}
