package guest

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/agent/proto"
)

// drainAfterExit bounds how long output is still read after the process
// exits; a background child that keeps stdout open must not hold the exec.
const drainAfterExit = time.Second

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
		m, tty, err := pty.Open()
		if err != nil {
			exit(proto.Exit{Code: 126, Error: "exec: open pty: " + err.Error()})
			return
		}
		rows, cols := req.Rows, req.Cols
		if rows == 0 || cols == 0 {
			rows, cols = 24, 80
		}
		pty.Setsize(m, &pty.Winsize{Rows: rows, Cols: cols})
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
			unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, pipeSize)
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
	var wg sync.WaitGroup
	for i, f := range outs {
		wg.Add(1)
		go func(f *os.File, t byte) {
			defer wg.Done()
			buf := make([]byte, proto.ChunkSize)
			for {
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
					pty.Setsize(master, &pty.Winsize{Rows: r.Rows, Cols: r.Cols})
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
	for _, f := range outs {
		f.SetReadDeadline(time.Now().Add(drainAfterExit))
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
