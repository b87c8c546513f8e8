package guest

import (
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/agent/proto"
)

// After the process exits its output is still read while it keeps coming:
// until a read waits drainIdle for data, and for drainMax at most. That
// delivers what the process left in the pipes even to a slow host (each
// read gets drainIdle, however long the copier waited to send), while a
// background child that keeps stdout open (a server started with &) holds
// the exec for drainIdle if quiet, drainMax if chatty.
const (
	drainIdle = time.Second
	drainMax  = 5 * time.Second
)

// pipeSize is the capacity asked for the output pipes (the default is 64 KiB).
const pipeSize = 1 << 20

func (s *Server) exec(ctx context.Context, st io.ReadWriter, req *proto.ExecRequest) {
	exit := func(e proto.Exit) { proto.WriteJSON(st, proto.TExit, e) }
	p, failed := s.startProcess(req, true)
	if failed != nil {
		exit(*failed)
		return
	}
	drain := p.output(proto.ChunkSize, func(t byte, b []byte) error { return proto.WriteFrame(st, t, b) })

	// Input: frames from the host until the stream closes.
	hostGone := make(chan struct{})
	go func() {
		defer close(hostGone)
		for {
			t, b, err := proto.ReadFrame(st, proto.MaxFrame)
			if err != nil {
				return
			}
			p.input(t, b)
		}
	}()

	var ws syscall.WaitStatus
	select {
	case ws = <-p.waitc:
	case <-hostGone:
		// The host went away without waiting: end the process like a hangup.
		p.hangup()
		ws = <-p.waitc
	}
	exit(p.finish(ws, drain))
}

// process is a command the agent started for the host (an exec or a
// session): its group, its stdin and its output.
type process struct {
	pid    int // also its process group's
	waitc  <-chan syscall.WaitStatus
	tty    bool
	stdin  io.WriteCloser // nil: the process reads /dev/null
	master *os.File       // the PTY's master, when tty
	outs   []*os.File     // read ends, one per output stream
	types  []byte         // their frame types

	stdinMu sync.Mutex // guards stdin
}

// startProcess starts req in a process group (with a PTY, a session of
// its own) of its own. Without withStdin (and without a TTY) its stdin is
// /dev/null. When it cannot start, the exit to report is returned.
func (s *Server) startProcess(req *proto.ExecRequest, withStdin bool) (*process, *proto.Exit) {
	fail := func(code int, msg string) (*process, *proto.Exit) {
		return nil, &proto.Exit{Code: code, Error: "exec: " + msg}
	}
	if req == nil || len(req.Argv) == 0 {
		return fail(126, "no command given")
	}
	u, err := lookupUser(req.User)
	if err != nil {
		return fail(126, err.Error())
	}
	env := u.env()
	if req.TTY {
		env = append(env, "TERM=xterm-256color")
	}
	env = mergeEnv(env, req.Env)
	argv0, err := lookPath(req.Argv[0], env)
	if err != nil {
		return fail(127, err.Error())
	}
	dir := req.Dir
	if dir == "" {
		dir = u.home
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			dir = "/"
		}
	} else if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fail(126, "working directory "+dir+" does not exist")
	}

	cred := &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: u.groups}
	if os.Getuid() != 0 {
		cred = nil // tests run unprivileged
	}
	attr := &syscall.ProcAttr{Dir: dir, Env: env, Sys: &syscall.SysProcAttr{Credential: cred}}

	p := &process{tty: req.TTY}
	var closeIn []*os.File // child's ends, closed in the parent after fork
	var childFds []int     // the same, as raw descriptors
	if req.TTY {
		m, tty, err := openPTY()
		if err != nil {
			return fail(126, "open pty: "+err.Error())
		}
		rows, cols := req.Rows, req.Cols
		if rows == 0 || cols == 0 {
			rows, cols = 24, 80
		}
		setWinsize(m, rows, cols)
		p.master, p.stdin = m, m
		p.outs, p.types = []*os.File{m}, []byte{proto.TStdout}
		closeIn = []*os.File{tty}
		attr.Files = []uintptr{tty.Fd(), tty.Fd(), tty.Fd()}
		attr.Sys.Setsid, attr.Sys.Setctty, attr.Sys.Ctty = true, true, 0
	} else {
		// Raw pipes: the child's ends are never polled, so they skip the
		// poller's registration and the switch back to blocking mode that
		// os.Pipe and Fd would cost (each syscall is dear under gVisor).
		var fds [6]int // stdin read, write; stdout read, write; stderr read, write
		for i := range fds {
			fds[i] = -1
		}
		var err error
		if withStdin {
			err = unix.Pipe2(fds[0:2], unix.O_CLOEXEC)
		} else {
			fds[0], err = devNull()
		}
		if err == nil {
			err = unix.Pipe2(fds[2:4], unix.O_CLOEXEC)
		}
		if err == nil {
			err = unix.Pipe2(fds[4:6], unix.O_CLOEXEC)
		}
		if err != nil {
			for i, fd := range fds {
				if fd >= 0 && !(i == 0 && !withStdin) {
					unix.Close(fd)
				}
			}
			return fail(126, "pipes: "+err.Error())
		}
		// Larger output pipes: fewer, larger reads and frames (each
		// syscall is dear under emulation). Best effort.
		unix.FcntlInt(uintptr(fds[2]), unix.F_SETPIPE_SZ, pipeSize)
		unix.FcntlInt(uintptr(fds[4]), unix.F_SETPIPE_SZ, pipeSize)
		// The host's ends, non-blocking: os.NewFile makes them pollable,
		// so the drain's read deadlines work.
		file := func(fd int, name string) *os.File {
			unix.SetNonblock(fd, true)
			return os.NewFile(uintptr(fd), name)
		}
		if withStdin {
			p.stdin = file(fds[1], "|stdin")
			childFds = append(childFds, fds[0])
		} // (else fds[0] is the shared /dev/null: it stays open)
		p.outs, p.types = []*os.File{file(fds[2], "|stdout"), file(fds[4], "|stderr")}, []byte{proto.TStdout, proto.TStderr}
		childFds = append(childFds, fds[3], fds[5])
		attr.Files = []uintptr{uintptr(fds[0]), uintptr(fds[3]), uintptr(fds[5])}
		attr.Sys.Setpgid = true
	}
	pid, waitc, err := s.Reaper.Start(argv0, req.Argv, attr)
	for _, f := range closeIn {
		f.Close()
	}
	for _, fd := range childFds {
		unix.Close(fd)
	}
	if err != nil {
		for _, f := range p.outs {
			f.Close()
		}
		if p.stdin != nil && !p.tty {
			p.stdin.Close()
		}
		code := 126
		if errors.Is(err, syscall.ENOENT) {
			code = 127
		}
		return fail(code, req.Argv[0]+": "+err.Error())
	}
	p.pid, p.waitc = pid, waitc
	return p, nil
}

// output starts one copier per output stream, each passing what it reads
// (at most bufSize bytes at a time) to write with the stream's frame type
// until write fails. The returned drain, called once the process has
// exited, lets the copiers read what is left while it keeps coming and
// waits for them.
func (p *process) output(bufSize int, write func(t byte, b []byte) error) (drain func()) {
	var (
		wg     sync.WaitGroup
		exited atomic.Int64 // unix nanoseconds of the exit, 0 before
	)
	drainDeadline := func() time.Time {
		idle, limit := time.Now().Add(drainIdle), time.Unix(0, exited.Load()).Add(drainMax)
		if idle.After(limit) {
			return limit
		}
		return idle
	}
	for i, f := range p.outs {
		wg.Add(1)
		go func(f *os.File, t byte) {
			defer wg.Done()
			buf := make([]byte, bufSize)
			for {
				if exited.Load() != 0 {
					f.SetReadDeadline(drainDeadline())
				}
				n, err := f.Read(buf)
				if n > 0 {
					if write(t, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					return // EOF, EIO (pty closed) or the drain deadline
				}
			}
		}(f, p.types[i])
	}
	return func() {
		exited.Store(time.Now().UnixNano())
		for _, f := range p.outs {
			f.SetReadDeadline(drainDeadline()) // wakes a read already waiting
		}
		wg.Wait()
	}
}

// finish, once the process has exited with ws, closes its stdin, drains
// its output (see output) and closes it, and returns its exit.
func (p *process) finish(ws syscall.WaitStatus, drain func()) proto.Exit {
	if !p.tty {
		p.closeStdin()
	}
	drain()
	for _, f := range p.outs {
		f.Close()
	}
	e := proto.Exit{Code: ws.ExitStatus()}
	if ws.Signaled() {
		e.Code = 128 + int(ws.Signal())
		e.Signal = unix.SignalName(ws.Signal())
	}
	return e
}

// input acts on one frame from the host: stdin, its end, a resize, a
// signal. Other frames are ignored.
func (p *process) input(t byte, b []byte) {
	switch t {
	case proto.TStdin:
		// Not under stdinMu: a write that blocks (a process that does not
		// read) must not hold up closeStdin, whose close ends the write.
		p.stdinMu.Lock()
		in := p.stdin
		p.stdinMu.Unlock()
		if in != nil {
			if _, err := in.Write(b); err != nil && !p.tty {
				p.closeStdin()
			}
		}
	case proto.TCloseStdin:
		if !p.tty {
			p.closeStdin()
		}
	case proto.TResize:
		var r proto.Resize
		if proto.DecodeJSON(b, &r) == nil && p.master != nil && r.Rows > 0 && r.Cols > 0 {
			setWinsize(p.master, r.Rows, r.Cols)
		}
	case proto.TSignal:
		var sg proto.Signal
		if proto.DecodeJSON(b, &sg) == nil {
			p.signal(sg.Name)
		}
	}
}

// signal sends the named signal ("TERM", "SIGKILL") to the process group;
// an unknown name does nothing.
func (p *process) signal(name string) bool {
	sig := unix.SignalNum("SIG" + strings.TrimPrefix(strings.ToUpper(name), "SIG"))
	if sig == 0 {
		return false
	}
	syscall.Kill(-p.pid, sig)
	return true
}

// hangup ends the process group as a closed terminal would, at once.
func (p *process) hangup() {
	syscall.Kill(-p.pid, syscall.SIGHUP)
	syscall.Kill(-p.pid, syscall.SIGKILL)
}

func (p *process) closeStdin() {
	p.stdinMu.Lock()
	if p.stdin != nil {
		p.stdin.Close()
		p.stdin = nil
	}
	p.stdinMu.Unlock()
}

// devNull returns a descriptor of /dev/null (read-only), opened once and
// kept: the stdin of every process started without one.
var devNull = sync.OnceValues(func() (int, error) {
	return unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
})

// control runs fn on f's descriptor without f.Fd(), which would switch f
// to blocking mode and so disable its read deadlines (the output drain
// after exit relies on them).
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// setWinsize sets the terminal size of the PTY master m (pty.Setsize
// would use m.Fd(); see control).
func setWinsize(m *os.File, rows, cols uint16) error {
	return control(m, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
}

// openPTY opens a new PTY pair. Not creack/pty: its Open and Setsize use
// Fd() (see control), so the master would lose its read deadlines.
func openPTY() (master, tty *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	var n int
	err = control(m, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil { // unlock
			return err
		}
		n, err = unix.IoctlGetInt(fd, unix.TIOCGPTN)
		return err
	})
	if err == nil {
		tty, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, tty, nil
}
