package guest

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Reaper is PID 1's child reaper. Processes started through it get their
// wait status delivered; every other child (orphans re-parented to PID 1) is
// reaped and forgotten.
type Reaper struct {
	// Limit, when set, holds the processes Start forks (and theirs).
	Limit *ProcLimit

	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
}

// NewReaper starts reaping on SIGCHLD.
func NewReaper() *Reaper {
	r := &Reaper{waiters: map[int]chan syscall.WaitStatus{}}
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, syscall.SIGCHLD)
	go func() {
		for range ch {
			r.reap()
		}
	}()
	return r
}

func (r *Reaper) reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
		r.mu.Lock()
		if c, ok := r.waiters[pid]; ok {
			c <- ws
			delete(r.waiters, pid)
		}
		r.mu.Unlock()
	}
}

// Start forks argv under the reaper's lock, so its exit cannot be reaped
// before its waiter is registered.
func (r *Reaper) Start(argv0 string, argv []string, attr *syscall.ProcAttr) (int, <-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var pid int
	err := r.Limit.Fork(func() (err error) {
		pid, err = syscall.ForkExec(argv0, argv, attr)
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	c := make(chan syscall.WaitStatus, 1)
	r.waiters[pid] = c
	return pid, c, nil
}
