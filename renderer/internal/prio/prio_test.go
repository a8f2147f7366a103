package prio

import (
	"context"
	"os/exec"
	"syscall"
	"testing"
)

func TestLowerOnlyBackground(t *testing.T) {
	for _, bg := range []bool{false, true} {
		ctx := context.Background()
		if bg {
			ctx = Background(ctx)
		}
		cmd := exec.Command("sleep", "5")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		Lower(ctx, cmd.Process.Pid)
		// getpriority returns 20 - nice for PRIO_PROCESS on Linux.
		got, err := syscall.Getpriority(syscall.PRIO_PROCESS, cmd.Process.Pid)
		cmd.Process.Kill()
		cmd.Wait()
		if err != nil {
			t.Fatal(err)
		}
		want := 20
		if bg {
			want = 20 - Niceness
		}
		if got != want {
			t.Errorf("background %v: priority %d, want %d", bg, got, want)
		}
	}
}
