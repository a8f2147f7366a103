package logbridge

import (
	"log/slog"
	"regexp"
	"strings"
)

// parseStdLog splits "[WARN] (runner) text" into its parts. Lines without
// the pattern are logged at info as they are.
func parseStdLog(s string) (slog.Level, string, string) {
	level, s := cutLevel(s)
	component := ""
	if rest, ok := strings.CutPrefix(s, "("); ok {
		if c, after, ok := strings.Cut(rest, ")"); ok && !strings.Contains(c, " ") {
			component = c
			s = strings.TrimSpace(after)
		}
	}
	// consul-template's ":" after the component is noise in structured logs.
	s = strings.TrimPrefix(s, ": ")
	return level, component, s
}

// frameFile is the second line of a pkg/errors stack frame as %+v prints
// it: a tab, the file and the line number, and whatever the log call
// printed after the error (" (retry attempt 1 after ...)").
var frameFile = regexp.MustCompile(`^\t\S+:\d+(.*)$`)

// stripStack drops the stack frames from a message that printed a
// github.com/pkg/errors error with %+v: consul-template wraps its errors
// with that package, and a trace on every Consul retry buries the message.
// Each frame is a function line followed by a frame line ("\tfile:line");
// the messages between the traces and any text after the last frame stay.
func stripStack(msg string) string {
	if !strings.Contains(msg, "\n\t") {
		return msg
	}
	lines := strings.Split(msg, "\n")
	keep := make([]string, 0, len(lines))
	for i, l := range lines {
		m := frameFile.FindStringSubmatch(l)
		if i == 0 || m == nil {
			keep = append(keep, l)
			continue
		}
		// The function line before it belongs to the frame; the first
		// line of the message never does.
		if n := len(keep); n > 1 && isFuncLine(keep[n-1]) {
			keep = keep[:n-1]
		}
		if tail := strings.TrimSpace(m[1]); tail != "" {
			keep[len(keep)-1] += " " + tail
		}
	}
	return strings.Join(keep, "\n")
}

// isFuncLine reports whether s looks like a Go function name as a stack
// trace prints it ("github.com/x/y.(*T).m", "runtime.goexit"): no blanks,
// a package-qualified name.
func isFuncLine(s string) bool {
	return s != "" && strings.Contains(s, ".") && !strings.ContainsAny(s, " \t")
}
