package supervise

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
)

// BridgeStdLog sends everything written through Go's global log package
// (consul-template logs there, as "[LEVEL] (component) message") to logger,
// at the matching slog level with the component as a key. It returns a
// function that restores the previous output.
func BridgeStdLog(logger *slog.Logger) (restore func()) {
	prevOut, prevFlags, prevPrefix := log.Writer(), log.Flags(), log.Prefix()
	log.SetFlags(0)
	log.SetPrefix("")
	log.SetOutput(&stdLogWriter{log: logger})
	return func() {
		log.SetOutput(prevOut)
		log.SetFlags(prevFlags)
		log.SetPrefix(prevPrefix)
	}
}

type stdLogWriter struct{ log *slog.Logger }

func (w *stdLogWriter) Write(p []byte) (int, error) {
	// The log package makes one Write per message; a message may span
	// lines (a proxy's output inside an error) and stays one record.
	level, component, msg := parseStdLog(string(bytes.TrimRight(p, "\n")))
	if !w.log.Enabled(context.Background(), level) {
		return len(p), nil
	}
	if component != "" {
		w.log.Log(context.Background(), level, msg, "component", component)
	} else {
		w.log.Log(context.Background(), level, msg)
	}
	return len(p), nil
}

// parseStdLog splits "[WARN] (runner) text" into its parts. Lines without
// the pattern are logged at info as they are.
func parseStdLog(s string) (slog.Level, string, string) {
	level := slog.LevelInfo
	if rest, ok := strings.CutPrefix(s, "["); ok {
		if tag, after, ok := strings.Cut(rest, "]"); ok {
			switch tag {
			case "TRACE", "DEBUG":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelInfo
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			s = strings.TrimSpace(after)
		}
	}
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
