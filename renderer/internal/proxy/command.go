package proxy

import (
	"context"
	"strings"
	"time"
)

// Command validates with an operator's command line (--validate-cmd), run
// by /bin/sh with {{path}} replaced by the quoted path of the staged file.
// A zero exit status means valid.
type Command struct {
	Line    string
	Timeout time.Duration
}

// Validate implements pipeline.Validator.
func (c Command) Validate(ctx context.Context, path string) error {
	line := strings.ReplaceAll(c.Line, "{{path}}", shellQuote(path))
	out, err := run(ctx, c.Timeout, "/bin/sh", "-c", line)
	if err != nil {
		return &ValidationError{Proxy: "validate-cmd", Path: path, Output: string(out), Err: err}
	}
	return nil
}

// shellQuote quotes s for /bin/sh: inside single quotes nothing is special
// but the single quote itself.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
