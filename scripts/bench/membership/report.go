package main

import (
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

const legend = `
failed: a dial, write or read error, or a non-2xx answer; never retried.
new workers: worker processes the proxy started during the phase (seen in
  the process table every 50-100ms); generations: new workers / workers in
  one generation. old workers left: retired workers still running after the
  proxy's own drain limit (nginx worker_shutdown_timeout, HAProxy
  hard-stop-after) plus 1s, or -drain-wait. Caddy serves from one process:
  no generations to count ("-").
applied: the renderer's /status counters over the phase (runtime applies,
  reloads, runtime applies that fell back to a reload); consul-template:
  commands run (each one a reload).
`

// printResults prints one table per measure, every proxy's rows in it.
func printResults(o options, groups []*groupResult, took time.Duration, load0 string) {
	if len(groups) == 0 {
		return
	}
	fmt.Printf("\n%d CPUs, load average %s before the run (the run itself keeps them busy)\n", runtime.NumCPU(), load0)
	fmt.Printf("\n== catalog change -> served (%d trials; new connection per request, probe every %s) ==\n", o.trials, probeEvery)
	printLatency(groups)
	// The order: keep-alive membership, keep-alive structural,
	// then new connections for both.
	for _, i := range []int{0, 2, 1, 3} {
		fmt.Printf("\n== %s: %d changes %s apart, %d clients per pipeline ==\n", phases[i].name, o.changes, o.interval, o.conns)
		printPhase(groups, i)
	}
	fmt.Print(legend)
	fmt.Printf("took %s\n", took.Round(time.Second))
}

func newTable() *tabwriter.Writer {
	return tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
}

func printLatency(groups []*groupResult) {
	w := newTable()
	fmt.Fprintln(w, "proxy\ttool\tadd p50\tadd p90\tremove p50\tremove p90\tmissed\tp50 vs consul-template (add, remove)\t")
	for _, g := range groups {
		ct := g.latency[toolCT]
		for _, tool := range tools {
			r := g.latency[tool]
			if r == nil {
				continue
			}
			ratio := "-"
			if tool != toolCT && ct != nil {
				ratio = fmt.Sprintf("%s, %s", times(pct(r.add, 50), pct(ct.add, 50)), times(pct(r.remove, 50), pct(ct.remove, 50)))
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t\n", g.proxy, tool,
				msec(pct(r.add, 50)), msec(pct(r.add, 90)), msec(pct(r.remove, 50)), msec(pct(r.remove, 90)), r.missed, ratio)
		}
	}
	w.Flush()
}

func printPhase(groups []*groupResult, i int) {
	w := newTable()
	fmt.Fprintln(w, "proxy\ttool\trequests\tfailed\tfailed %\tvs consul-template\tnew workers\tgenerations\told workers left\tapplied: runtime/reload/fallback\t")
	var why []string
	for _, g := range groups {
		if i >= len(g.phases) {
			continue
		}
		ct := g.phases[i][toolCT]
		for _, tool := range tools {
			r := g.phases[i][tool]
			if r == nil {
				continue
			}
			vs := "-"
			if tool != toolCT && ct != nil && ct.load.failed > 0 {
				vs = fmt.Sprintf("%.2fx", float64(r.load.failed)/float64(ct.load.failed))
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%.3f\t%s\t%s\t%s\t%s\t%s\t\n", g.proxy, tool, r.load.requests, r.load.failed,
				percent(r.load.failed, r.load.requests), vs, workersCell(r), gensCell(r), oldCell(r), appliedCell(tool, r.applied))
			if r.load.failed > 0 {
				why = append(why, fmt.Sprintf("  %s/%s failed: %s", g.proxy, tool, reasons(r.load.reasons)))
			}
			if r.drainNote != "" {
				why = append(why, fmt.Sprintf("  %s/%s: %s", g.proxy, tool, r.drainNote))
			}
			if r.obsErr != nil {
				why = append(why, fmt.Sprintf("  %s/%s: workers not counted: %v", g.proxy, tool, r.obsErr))
			}
		}
	}
	w.Flush()
	for _, l := range why {
		fmt.Println(l)
	}
}

func workersCell(r *phaseResult) string {
	if !r.observed {
		return "-"
	}
	return fmt.Sprint(r.spawned)
}

// gensCell is the workers started over the size of one generation.
func gensCell(r *phaseResult) string {
	if !r.observed || r.perGen == 0 {
		return "-"
	}
	return fmt.Sprint((r.spawned + r.perGen - 1) / r.perGen)
}

func oldCell(r *phaseResult) string {
	switch {
	case !r.observed:
		return "-"
	case r.oldLeft < 0:
		return "?"
	}
	return fmt.Sprintf("%d after %s", r.oldLeft, r.drainWait.Round(time.Second))
}

func appliedCell(tool string, a applies) string {
	switch {
	case !a.ok:
		return "?"
	case tool == toolCT:
		return fmt.Sprintf("-/%d/-", a.reload)
	}
	return fmt.Sprintf("%d/%d/%d", a.runtime, a.reload, a.fallback)
}

// reasons lists failure reasons, most frequent first.
func reasons(m map[string]int64) string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int { return int(m[b] - m[a]) })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

func percent(n, of int64) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return -1
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func msec(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
}

// times is a/b as a ratio, "-" when either is unknown or b is 0.
func times(a, b time.Duration) string {
	if a < 0 || b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", float64(a)/float64(b))
}
