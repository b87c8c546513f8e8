package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/wisp-sh/wisp/internal/agent/proto"
)

// ExecIO connects a process's standard streams. Nil readers/writers mean
// empty stdin and discarded output.
type ExecIO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Exec runs a process in the guest and returns its exit. It returns when the
// process has exited and its output has been copied. Cancelling ctx kills the
// process in the guest.
func (c *Client) Exec(ctx context.Context, req proto.ExecRequest, sio ExecIO) (proto.Exit, error) {
	s, err := c.Open(ctx, proto.Request{Op: proto.OpExec, Exec: &req})
	if err != nil {
		return proto.Exit{}, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() {
		proto.WriteJSON(s.s, proto.TSignal, proto.Signal{Name: "KILL"})
		// A guest that does not answer is cut off after a grace period.
		time.AfterFunc(5*time.Second, func() { s.SetDeadline(time.Now()) })
	})
	defer stop()

	var wg sync.WaitGroup
	if sio.Stdin != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			CopyIn(s, sio.Stdin, proto.TStdin)
			s.WriteFrame(proto.TCloseStdin, nil)
		}()
	} else {
		s.WriteFrame(proto.TCloseStdin, nil)
	}
	exit, err := CopyOut(s, sio.Stdout, sio.Stderr)
	// Stdin copying may still block on a reader that never ends; the
	// stream's close unblocks its writes, not its reads, so do not wait.
	return exit, err
}

// CopyIn sends r as frames of type t until r ends. It reports r's error.
func CopyIn(s *Stream, r io.Reader, t byte) error {
	buf := make([]byte, proto.ChunkSize)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := s.WriteFrame(t, buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// CopyOut copies stdout and stderr frames to the writers until the TExit
// frame and returns it.
func CopyOut(s *Stream, stdout, stderr io.Writer) (proto.Exit, error) {
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	for {
		t, p, err := s.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return proto.Exit{}, fmt.Errorf("%w: exec stream: %w", ErrAgent, err)
		}
		switch t {
		case proto.TStdout:
			if _, err := stdout.Write(p); err != nil {
				return proto.Exit{}, err
			}
		case proto.TStderr:
			if _, err := stderr.Write(p); err != nil {
				return proto.Exit{}, err
			}
		case proto.TExit:
			return decodeExit(p)
		default:
			return proto.Exit{}, fmt.Errorf("%w: unexpected frame type %d in exec stream", ErrAgent, t)
		}
	}
}
