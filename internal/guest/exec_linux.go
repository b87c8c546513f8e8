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
	if req == nil || len(req.Argv) == 0 {
		exit(proto.Exit{Code: 126, Error: "exec: no command given"})
		return
	}
	u, err := lookupUser(req.User)
	if err != nil {
		exit(proto.Exit{Code: 126, Error: "exec: " + err.Error()})
		return
	}
	env := u.env()
	if req.TTY {
		env = append(env, "TERM=xterm-256color")
	}
	env = mergeEnv(env, req.Env)
	argv0, err := lookPath(req.Argv[0], env)
	if err != nil {
		exit(proto.Exit{Code: 127, Error: "exec: " + err.Error()})
		return
	}
	dir := req.Dir
	if dir == "" {
		dir = u.home
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			dir = "/"
		}
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		exit(proto.Exit{Code: 126, Error: "exec: working directory " + dir + " does not exist"})
		return
	}

	cred := &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: u.groups}
	if os.Getuid() != 0 {
		cred = nil // tests run unprivileged
	}
	attr := &syscall.ProcAttr{Dir: dir, Env: env, Sys: &syscall.SysProcAttr{Credential: cred}}

	var (
		stdin   io.WriteCloser
		outs    []*os.File // read ends, one per output stream
		types   []byte
		closeIn []*os.File // child's ends, closed in the parent after fork
		master  *os.File
	)
	if req.TTY {
		m, tty, err := openPTY()
		if err != nil {
			exit(proto.Exit{Code: 126, Error: "exec: open pty: " + err.Error()})
			return
		}
		rows, cols := req.Rows, req.Cols
		if rows == 0 || cols == 0 {
			rows, cols = 24, 80
		}
		setWinsize(m, rows, cols)
		master = m
		stdin = m
		outs, types = []*os.File{m}, []byte{proto.TStdout}
		closeIn = []*os.File{tty}
		attr.Files = []uintptr{tty.Fd(), tty.Fd(), tty.Fd()}
		attr.Sys.Setsid, attr.Sys.Setctty, attr.Sys.Ctty = true, true, 0
	} else {
		inR, inW, err1 := os.Pipe()
		outR, outW, err2 := os.Pipe()
		errR, errW, err3 := os.Pipe()
		if err := errors.Join(err1, err2, err3); err != nil {
			exit(proto.Exit{Code: 126, Error: "exec: pipes: " + err.Error()})
			return
		}
		// Larger output pipes: fewer, larger reads and frames (each
		// syscall is dear under emulation). Best effort.
		for _, f := range []*os.File{outR, errR} {
			control(f, func(fd int) error {
				_, err := unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, pipeSize)
				return err
			})
		}
		stdin = inW
		outs, types = []*os.File{outR, errR}, []byte{proto.TStdout, proto.TStderr}
		closeIn = []*os.File{inR, outW, errW}
		attr.Files = []uintptr{inR.Fd(), outW.Fd(), errW.Fd()}
		attr.Sys.Setpgid = true
	}
	pid, waitc, err := s.Reaper.Start(argv0, req.Argv, attr)
	for _, f := range closeIn {
		f.Close()
	}
	if err != nil {
		for _, f := range outs {
			f.Close()
		}
		stdin.Close()
		code := 126
		if errors.Is(err, syscall.ENOENT) {
			code = 127
		}
		exit(proto.Exit{Code: code, Error: "exec: " + req.Argv[0] + ": " + err.Error()})
		return
	}

	// Output: one copier per stream.
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
	for i, f := range outs {
		wg.Add(1)
		go func(f *os.File, t byte) {
			defer wg.Done()
			buf := make([]byte, proto.ChunkSize)
			for {
				if exited.Load() != 0 {
					f.SetReadDeadline(drainDeadline())
				}
				n, err := f.Read(buf)
				if n > 0 {
					if proto.WriteFrame(st, t, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					return // EOF, EIO (pty closed) or the drain deadline
				}
			}
		}(f, types[i])
	}

	// Input: frames from the host until the stream closes.
	hostGone := make(chan struct{})
	go func() {
		defer close(hostGone)
		for {
			t, p, err := proto.ReadFrame(st, proto.MaxFrame)
			if err != nil {
				return
			}
			switch t {
			case proto.TStdin:
				if _, err := stdin.Write(p); err != nil && !req.TTY {
					stdin.Close()
				}
			case proto.TCloseStdin:
				if !req.TTY {
					stdin.Close()
				}
			case proto.TResize:
				var r proto.Resize
				if proto.DecodeJSON(p, &r) == nil && master != nil && r.Rows > 0 && r.Cols > 0 {
					setWinsize(master, r.Rows, r.Cols)
				}
			case proto.TSignal:
				var sg proto.Signal
				if proto.DecodeJSON(p, &sg) == nil {
					if sig := unix.SignalNum("SIG" + strings.TrimPrefix(strings.ToUpper(sg.Name), "SIG")); sig != 0 {
						syscall.Kill(-pid, sig)
					}
				}
			}
		}
	}()

	var ws syscall.WaitStatus
	select {
	case ws = <-waitc:
	case <-hostGone:
		// The host went away without waiting: end the process like a hangup.
		syscall.Kill(-pid, syscall.SIGHUP)
		syscall.Kill(-pid, syscall.SIGKILL)
		ws = <-waitc
	}
	if !req.TTY {
		stdin.Close()
	}
	exited.Store(time.Now().UnixNano())
	for _, f := range outs {
		f.SetReadDeadline(drainDeadline()) // wakes a read already waiting
	}
	wg.Wait()
	for _, f := range outs {
		f.Close()
	}
	e := proto.Exit{Code: ws.ExitStatus()}
	if ws.Signaled() {
		e.Code = 128 + int(ws.Signal())
		e.Signal = unix.SignalName(ws.Signal())
	}
	exit(e)
}

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
