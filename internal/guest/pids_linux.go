package guest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// PidsDir is where the agent mounts the pids cgroup hierarchy that holds
// the sprite's processes.
const PidsDir = "/run/wisp/pids"

// ProcLimit bounds the processes (tasks) the agent's children and their
// descendants may hold at once, with a pids cgroup of their own: a fork
// bomb meets EAGAIN inside the sprite. The agent itself stays outside that
// cgroup (in the hierarchy's root), but for the one thread that forks,
// which makes no threads: the bomb cannot keep it from making the threads
// it needs to serve the host, or from starting `kill`.
//
// A process is born in its parent's cgroup, so each fork happens on a
// thread of the agent's that lives in the limited cgroup (cgroup v1 moves
// single threads through "tasks"): see Fork.
type ProcLimit struct {
	root, limited string // tasks files

	once  sync.Once
	forks chan forkReq // to the forking thread; nil: each fork moves its own
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
// limited cgroup, so the child is born there. A nil ProcLimit just runs
// fork.
//
// The thread is made on first use and stays in the cgroup, locked to a
// goroutine that runs the forks one at a time: moving a thread in and out
// for each fork (two writes to the tasks files) cost ~0.3 ms of every
// exec under gVisor, more than the hop to that goroutine. When the move
// in fails, each fork moves its own thread in and out instead.
func (l *ProcLimit) Fork(fork func() error) error {
	if l == nil {
		return fork()
	}
	l.once.Do(l.startForker)
	if l.forks == nil {
		return l.forkMoving(fork)
	}
	done := make(chan error, 1)
	l.forks <- forkReq{fork, done}
	return <-done
}

type forkReq struct {
	fork func() error
	done chan<- error
}

// startForker starts the forking goroutine on a thread of its own in the
// limited cgroup. That thread never goes back to the root: the Go runtime
// never runs other goroutines on a locked thread, and it makes new
// threads from a template thread, not from a locked one, so none is born
// in the limited cgroup but the children of fork.
func (l *ProcLimit) startForker() {
	ready := make(chan bool)
	forks := make(chan forkReq)
	go func() {
		runtime.LockOSThread() // for good: the thread ends with the goroutine
		if os.WriteFile(l.limited, []byte(strconv.Itoa(unix.Gettid())), 0) != nil {
			ready <- false
			return
		}
		ready <- true
		for r := range forks {
			r.done <- r.fork()
		}
	}()
	if <-ready {
		l.forks = forks
	}
}

// forkMoving runs fork on the calling goroutine's thread moved into the
// limited cgroup meanwhile.
func (l *ProcLimit) forkMoving(fork func() error) error {
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
