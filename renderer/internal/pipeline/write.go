package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// The write path of one target, without state: read the live file, stage
// and validate a render next to it, swap it in as a new generation. What
// was written and what served is the Pipeline's business.

// readLive returns the live file's bytes; exists is false when there is
// none yet.
func readLive(dest string) (live []byte, exists bool, err error) {
	b, err := os.ReadFile(dest)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read live %s: %w", dest, err)
	}
	return b, true, nil
}

// staged is a validated render waiting next to its live file.
type staged struct {
	t       *Target
	path    string
	release func()
}

// writeError marks a failure of the write path itself (ENOSPC, EROFS,
// EACCES), as opposed to a proxy's rejection of the config.
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// stageValidated stages contents next to t's live file and has the proxy
// validate it there (relative includes resolve as in the live load). The
// caller commits or discards the result.
func stageValidated(ctx context.Context, t *Target, contents []byte, perms os.FileMode, timeout time.Duration) (*staged, time.Duration, error) {
	s, err := stageOnly(t, contents, perms)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	if err := validate(ctx, t, s.path, timeout); err != nil {
		s.discard()
		return nil, time.Since(start), fmt.Errorf("template %s -> %s: %w", t.Template, t.Dest, err)
	}
	return s, time.Since(start), nil
}

// stageOnly stages contents next to t's live file, creating its dir on the
// first render as consul-template does with create_dest_dirs.
func stageOnly(t *Target, contents []byte, perms os.FileMode) (*staged, error) {
	if err := os.MkdirAll(filepath.Dir(t.Dest), 0o755); err != nil {
		return nil, writeError{fmt.Errorf("template %s: create dir of %s: %w", t.Template, t.Dest, err)}
	}
	path, release, err := stage(t.Dest, contents, perms, t.Owner)
	if err != nil {
		return nil, writeError{fmt.Errorf("template %s: %w", t.Template, err)}
	}
	return &staged{t: t, path: path, release: release}, nil
}

func validate(ctx context.Context, t *Target, path string, timeout time.Duration) error {
	if t.Validator == nil {
		return nil
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return t.Validator.Validate(ctx, path)
}

// commit makes the staged file live and returns its generation, keeping
// protect (the generation last proved loaded) through pruning.
func (s *staged) commit(liveExists bool, protect int) (int, error) {
	defer s.discard()
	gen, err := swap(s.t.Dest, s.t.Keep, s.path, liveExists, protect)
	if err != nil {
		return 0, writeError{fmt.Errorf("template %s: %w", s.t.Template, err)}
	}
	return gen, nil
}

// discard removes the staged file (a no-op after the rename) and drops
// its lock.
func (s *staged) discard() {
	os.Remove(s.path)
	s.release()
}

func equalLive(live []byte, exists bool, contents []byte) bool {
	return exists && bytes.Equal(live, contents)
}
