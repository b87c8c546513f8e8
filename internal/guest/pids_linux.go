package guest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// PidsDir is where the agent mounts the pids cgroup hierarchy that holds
// the sprite's processes.
const PidsDir = "/run/wisp/pids"

// ProcLimit bounds the processes (tasks) the agent's children and their
// descendants may hold at once, with a pids cgroup of their own: a fork
// bomb meets EAGAIN inside the sprite. The agent itself stays outside that
// cgroup (in the hierarchy's root), so the bomb cannot keep it from making
// the threads it needs to serve the host, or from starting `kill`.
//
// A process is born in its parent's cgroup, so each fork happens on a
// thread moved into the limited cgroup for the fork and moved back after
// (cgroup v1 moves single threads through "tasks").
type ProcLimit struct {
	root, limited string // tasks files
}

// NewProcLimit mounts a pids cgroup hierarchy at dir and makes a cgroup
// "sprite" in it whose pids.max is n.
func NewProcLimit(dir string, n int) (*ProcLimit, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := unix.Mount("cgroup", dir, "cgroup", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "pids"); err != nil && !errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("mount pids cgroup on %s: %w", dir, err)
	}
	limited := filepath.Join(dir, "sprite")
	if err := os.Mkdir(limited, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	l := &ProcLimit{root: filepath.Join(dir, "tasks"), limited: filepath.Join(limited, "tasks")}
	if err := l.Set(n); err != nil {
		return nil, err
	}
	return l, nil
}

// Set changes the limit (a sprite restored from another's memory takes
// its own).
func (l *ProcLimit) Set(n int) error {
	if n <= 0 {
		return fmt.Errorf("process limit %d: want a positive number", n)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(l.limited), "pids.max"), []byte(strconv.Itoa(n)), 0); err != nil {
		return fmt.Errorf("set pids.max: %w", err)
	}
	return nil
}

// Fork runs fork (which forks one child) on a thread that is in the
// limited cgroup meanwhile, so the child is born there. A nil ProcLimit
// just runs fork.
func (l *ProcLimit) Fork(fork func() error) error {
	if l == nil {
		return fork()
	}
	runtime.LockOSThread()
	tid := []byte(strconv.Itoa(unix.Gettid()))
	if err := os.WriteFile(l.limited, tid, 0); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter the process limit's cgroup: %w", err)
	}
	err := fork()
	if os.WriteFile(l.root, tid, 0) == nil {
		runtime.UnlockOSThread()
	}
	// Otherwise the thread stays locked and ends with this goroutine:
	// the Go runtime never runs other goroutines on it, and it makes new
	// threads from a template thread, not from a locked one.
	return err
}
