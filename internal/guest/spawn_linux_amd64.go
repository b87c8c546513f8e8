package guest

import (
	"reflect"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// spawn starts argv0 as syscall.ForkExec does, for the attributes the
// agent uses; others (and a kernel without clone3's CLONE_CLEAR_SIGHAND)
// go to syscall.ForkExec.
//
// Under gVisor each system call costs ~10 µs, and Go's ForkExec makes
// some 75 in the child before its execve: the runtime resets every signal
// handler it installed (64 rt_sigaction) so that it can unblock signals.
// Here the kernel resets the handlers in the clone itself
// (CLONE_CLEAR_SIGHAND): ten system calls in the child instead of ~75,
// and a static program spawned and reaped in 1.2 ms in a sprite against
// 2.1-2.5 ms with ForkExec (BenchmarkSpawn; a C program's vfork takes
// 0.57 ms there). The child, which shares the agent's memory until its
// execve (CLONE_VM and CLONE_VFORK, as ForkExec's), runs no Go code: a
// few lines of assembly make the system calls of a list prepared here,
// on a stack of their own.
func spawn(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error) {
	if !fastSpawnOK.Load() || !fastSpawnable(attr) {
		return syscall.ForkExec(argv0, argv, attr)
	}
	pid, err, ok := fastSpawn(argv0, argv, attr)
	if !ok {
		fastSpawnOK.Store(false)
		return syscall.ForkExec(argv0, argv, attr)
	}
	return pid, err
}

// fastSpawnOK turns false when the kernel refuses the clone3 call.
var fastSpawnOK atomic.Bool

func init() { fastSpawnOK.Store(true) }

// What the child's system calls point at outside the heap: never moved,
// as a goroutine's stack may be. The child writes neither (it makes no
// calls, and its signals have their default actions), so concurrent
// children share them.
var (
	emptySigset uint64 // the exec'd program starts with no signal blocked
	spawnStack  [4 << 10]byte
)

// fastSpawnable reports whether fastSpawn does all that attr asks: three
// files (none of them 0, 1 or 2, which the moves into place would
// clobber), a directory, credentials, a process group or a session with
// its controlling terminal.
func fastSpawnable(attr *syscall.ProcAttr) bool {
	if attr == nil || len(attr.Files) != 3 || attr.Dir == "" {
		return false
	}
	for _, fd := range attr.Files {
		if fd < 3 || fd > 1<<30 {
			return false
		}
	}
	sys := attr.Sys
	if sys == nil {
		return true
	}
	rest := *sys
	rest.Credential, rest.Setpgid, rest.Setsid, rest.Setctty, rest.Ctty = nil, false, false, false, 0
	if !reflect.ValueOf(rest).IsZero() || sys.Setpgid && sys.Setsid || sys.Setctty && !sys.Setsid {
		return false
	}
	if c := sys.Credential; c != nil && c.NoSetGroups {
		return false
	}
	return true
}

// spawnStep is one system call of the child: number and arguments.
type spawnStep [7]uintptr

// spawnProg is what the child runs (read by spawn_linux_amd64.s: keep
// the layout).
type spawnProg struct {
	n      uintptr    // steps
	steps  *spawnStep // the first
	failed uintptr    // out: 1 + the index of the step that failed
	errno  uintptr    // out: its error
}

// cloneArgs is struct clone_args up to tls (CLONE_ARGS_SIZE_VER0).
type cloneArgs struct {
	flags, pidfd, childTID, parentTID, exitSignal, stack, stackSize, tls uint64
}

func clone3Exec(args unsafe.Pointer, size uintptr, prog *spawnProg) (pid uintptr, errno uintptr)

// fastSpawn is spawn's fast path; ok is false when the kernel does not
// do the clone (then nothing was started).
func fastSpawn(argv0 string, argv []string, attr *syscall.ProcAttr) (pid int, err error, ok bool) {
	path, err := syscall.BytePtrFromString(argv0)
	if err != nil {
		return 0, err, true
	}
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return 0, err, true
	}
	envp, err := syscall.SlicePtrFromStrings(attr.Env)
	if err != nil {
		return 0, err, true
	}
	dir, err := syscall.BytePtrFromString(attr.Dir)
	if err != nil {
		return 0, err, true
	}
	var (
		steps  = make([]spawnStep, 0, 12)
		groups []uint32
	)
	step := func(nr uintptr, args ...uintptr) {
		var s spawnStep
		s[0] = nr
		copy(s[1:], args)
		steps = append(steps, s)
	}
	sys := attr.Sys
	if sys == nil {
		sys = &syscall.SysProcAttr{}
	}
	if sys.Setsid {
		step(unix.SYS_SETSID)
	}
	if sys.Setpgid {
		step(unix.SYS_SETPGID, 0, 0)
	}
	if c := sys.Credential; c != nil {
		groups = c.Groups
		var gp uintptr
		if len(groups) > 0 {
			gp = uintptr(unsafe.Pointer(&groups[0]))
		}
		step(unix.SYS_SETGROUPS, uintptr(len(groups)), gp)
		step(unix.SYS_SETGID, uintptr(c.Gid))
		step(unix.SYS_SETUID, uintptr(c.Uid))
	}
	step(unix.SYS_CHDIR, uintptr(unsafe.Pointer(dir)))
	for i, fd := range attr.Files {
		step(unix.SYS_DUP3, fd, uintptr(i), 0)
	}
	if sys.Setctty {
		step(unix.SYS_IOCTL, uintptr(sys.Ctty), unix.TIOCSCTTY, 1)
	}
	step(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&emptySigset)), 0, 8)
	step(unix.SYS_EXECVE, uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(&argvp[0])), uintptr(unsafe.Pointer(&envp[0])))

	prog := &spawnProg{n: uintptr(len(steps)), steps: &steps[0]}
	args := &cloneArgs{
		flags:      unix.CLONE_VM | unix.CLONE_VFORK | unix.CLONE_CLEAR_SIGHAND,
		exitSignal: uint64(syscall.SIGCHLD),
		stack:      uint64(uintptr(unsafe.Pointer(&spawnStack[0]))),
		stackSize:  uint64(len(spawnStack)),
	}
	// As ForkExec: no descriptor is made without close-on-exec meanwhile.
	syscall.ForkLock.Lock()
	p, errno := clone3Exec(unsafe.Pointer(args), unsafe.Sizeof(*args), prog)
	syscall.ForkLock.Unlock()
	runtime.KeepAlive(path)
	runtime.KeepAlive(argvp)
	runtime.KeepAlive(envp)
	runtime.KeepAlive(dir)
	runtime.KeepAlive(steps)
	runtime.KeepAlive(groups)
	runtime.KeepAlive(args)
	runtime.KeepAlive(prog)
	switch e := syscall.Errno(errno); {
	case errno == 0:
	case e == syscall.ENOSYS || e == syscall.EINVAL:
		return 0, nil, false // no clone3, or no CLONE_CLEAR_SIGHAND (before 5.5)
	default:
		return 0, e, true // EAGAIN: the process limit
	}
	if prog.failed != 0 {
		// The child has exited (127). Reap it, as ForkExec does (a
		// reaper waiting for any child may have: then ECHILD).
		var ws syscall.WaitStatus
		syscall.Wait4(int(p), &ws, 0, nil)
		err := syscall.Errno(prog.errno)
		if err == 0 {
			err = syscall.EINVAL
		}
		return 0, err, true
	}
	return int(p), nil, true
}
