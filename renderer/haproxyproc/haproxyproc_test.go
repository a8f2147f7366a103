package haproxyproc

import (
	"maps"
	"slices"
	"testing"
)

// Answers of HAProxy 2.6's master CLI to "show proc", cut to the columns
// the parser reads (pid, type, reloads) and one version column.
func TestParse(t *testing.T) {
	header := "#<PID>  <type>  <reloads>  <uptime>  <version>\n"
	for _, tc := range []struct {
		name          string
		out           string
		master, fails int
		workers       []int
	}{{
		name: "fresh start with a program",
		out: header + "4120 master 0 [failed: 0] 0d00h01m00s 2.6.12\n" +
			"# workers\n4188 worker 0 0d00h00m30s 2.6.12\n" +
			"# old workers\n# programs\n4190 program 0 0d00h00m30s -\n",
		master: 4120, workers: []int{4188},
	}, {
		name: "after a failed reload, old workers draining",
		out: header + "500 master 3 [failed: 2] 0d00h05m00s 2.6.12\n" +
			"# workers\n950 worker 0 0d00h00m01s 2.6.12\n" +
			"# old workers\n700 worker 2 0d00h03m00s 2.6.12\n810 worker 1 0d00h01m00s 2.6.12\n",
		master: 500, fails: 2, workers: []int{950},
	}, {
		name:   "cut short by a master re-executing",
		out:    header + "500 master 3 [failed: 0] 0d00h05m00s 2.6.12\n",
		master: 500,
	}, {
		name: "empty answer",
	}} {
		got := Parse(tc.out)
		if got.Master != tc.master || got.Failed != tc.fails {
			t.Errorf("%s: master %d, failed %d; want %d, %d", tc.name, got.Master, got.Failed, tc.master, tc.fails)
		}
		if w := slices.Sorted(maps.Keys(got.Workers)); !slices.Equal(w, tc.workers) {
			t.Errorf("%s: current workers %v, want %v", tc.name, w, tc.workers)
		}
	}
}
