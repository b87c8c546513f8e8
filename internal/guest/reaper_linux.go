package guest

import (
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
	forked  chan struct{} // a child was started: wakes a reaper that found none
}

// NewReaper starts reaping: one goroutine waits in wait4 for any child.
// Not on SIGCHLD: under gVisor a signal's delivery to the agent and the
// hops to the goroutine that takes it added a few tenths of a millisecond
// to every exec; a blocked wait4 returns as the child ends.
func NewReaper() *Reaper {
	r := &Reaper{waiters: map[int]chan syscall.WaitStatus{}, forked: make(chan struct{}, 1)}
	go r.loop()
	return r
}

func (r *Reaper) loop() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			// ECHILD: no child yet (an orphan re-parented to PID 1 is
			// there before the parent it outlived is reaped).
			<-r.forked
			continue
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
		pid, err = spawn(argv0, argv, attr)
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	c := make(chan syscall.WaitStatus, 1)
	r.waiters[pid] = c
	select {
	case r.forked <- struct{}{}:
	default:
	}
	return pid, c, nil
}
