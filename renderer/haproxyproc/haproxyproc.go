// Package haproxyproc reads the process table HAProxy's master CLI prints
// for "show proc": the master, its current workers and its failed-reload
// count. It is public, not in renderer/internal, because two programs read
// that table: the renderer, to verify a reload, and the membership
// benchmark (scripts/bench/membership), to count workers; one parser keeps
// them agreeing on what a current worker is.
package haproxyproc

import (
	"bufio"
	"regexp"
	"strconv"
	"strings"
)

// Table is what "show proc" says.
type Table struct {
	Master int // the master's pid; 0 if the answer had no master line
	// Workers are the current workers' pids, not the old ones still
	// finishing their connections.
	Workers map[int]bool
	Failed  int // reloads the master counts as failed
}

var failedRe = regexp.MustCompile(`\[failed:\s*(\d+)\]`)

// Parse reads the table as HAProxy 2.6 prints it: the master line carries
// "[failed: N]", current workers follow "# workers", and workers still
// finishing old connections follow "# old workers". A partial answer (a
// master closing the connection as it re-executes) parses without error
// as far as it goes: the caller decides whether Master 0 is a failure.
func Parse(out string) Table {
	t := Table{Workers: map[int]bool{}}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			section = strings.TrimSpace(strings.TrimPrefix(line, "#"))
			continue
		}
		t.addLine(line, section)
	}
	return t
}

// addLine takes one process line, "<pid> <type> <reloads> ...", listed
// under section.
func (t *Table) addLine(line, section string) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return
	}
	switch {
	case f[1] == "master":
		t.Master = pid
		if m := failedRe.FindStringSubmatch(line); m != nil {
			t.Failed, _ = strconv.Atoi(m[1])
		}
	case f[1] == "worker" && section == "workers":
		t.Workers[pid] = true
	}
}
