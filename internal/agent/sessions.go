package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wisp-sh/wisp/internal/agent/proto"
)

// ErrDetached is what Session.Output returns when the session's stream
// ended without its exit: another stream took the session over, or the
// guest let go of the stream. The session itself runs on.
var ErrDetached = errors.New("detached from the session")

// Session is a stream attached to an exec session in the guest (see
// proto.OpSessionStart). Output must be read for the session to make
// progress: while a stream is attached, the guest holds the process back
// rather than drop output the stream has not taken. Close detaches.
type Session struct {
	// Info is the session as the guest described it when the stream
	// attached.
	Info proto.SessionInfo

	s         *Stream
	closeOnce sync.Once
	closed    atomic.Bool
}

// StartSession starts req as a session with the options in opt (Stdin,
// MaxRunAfterDisconnect) and attaches to it. ctx bounds the start, not
// the session or the stream: Close detaches. A command that cannot start
// is a session whose Output returns its exit (126 or 127) at once. At
// proto.MaxSessions running sessions the guest refuses with a GuestError
// of kind proto.KindLimit.
func (c *Client) StartSession(ctx context.Context, req proto.ExecRequest, opt proto.SessionRequest) (*Session, error) {
	opt.ID, opt.Signal = "", ""
	return c.openSession(ctx, proto.Request{Op: proto.OpSessionStart, Exec: &req, Session: &opt}, "")
}

// AttachSession attaches to session id, taking it from the stream that
// had it (that one's Output returns ErrDetached). Output then replays
// the output the guest kept, and follows.
func (c *Client) AttachSession(ctx context.Context, id string) (*Session, error) {
	if !proto.ValidSessionID(id) {
		return nil, &GuestError{Kind: proto.KindNotFound, Msg: fmt.Sprintf("no session %q: a session id is %d hex digits", id, proto.SessionIDLen)}
	}
	return c.openSession(ctx, proto.Request{Op: proto.OpSessionAttach, Session: &proto.SessionRequest{ID: id}}, id)
}

func (c *Client) openSession(ctx context.Context, req proto.Request, id string) (*Session, error) {
	s, err := c.Open(ctx, req)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { s.SetDeadline(time.Now()) })
	r, err := s.Response()
	if !stop() {
		err = errors.Join(err, context.Cause(ctx))
	}
	if err == nil {
		err = checkSessions(r.Sessions, 1, id)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	s.SetDeadline(time.Time{})
	return &Session{Info: r.Sessions[0], s: s}, nil
}

// Sessions lists the guest's sessions, oldest first.
func (c *Client) Sessions(ctx context.Context) ([]proto.SessionInfo, error) {
	r, err := c.call(ctx, proto.Request{Op: proto.OpSessionList})
	if err != nil {
		return nil, err
	}
	if err := checkSessions(r.Sessions, -1, ""); err != nil {
		return nil, err
	}
	return r.Sessions, nil
}

// KillSession sends signal (like "INT") to the process group of session
// id. An empty signal ends the group (TERM, then KILL after a grace
// period) and makes the guest forget the session; it returns once the
// process has ended. Killing a session that has ended succeeds.
func (c *Client) KillSession(ctx context.Context, id, signal string) error {
	if !proto.ValidSessionID(id) {
		return &GuestError{Kind: proto.KindNotFound, Msg: fmt.Sprintf("no session %q: a session id is %d hex digits", id, proto.SessionIDLen)}
	}
	_, err := c.call(ctx, proto.Request{Op: proto.OpSessionKill, Session: &proto.SessionRequest{ID: id, Signal: signal}})
	return err
}

// Write sends p to the session's stdin (ignored by a session without
// one).
func (s *Session) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), proto.ChunkSize)
		if err := s.s.WriteFrame(proto.TStdin, p[:k]); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

// CloseStdin ends the session's stdin (not a terminal's).
func (s *Session) CloseStdin() error { return s.s.WriteFrame(proto.TCloseStdin, nil) }

// Resize sets the size of the session's terminal.
func (s *Session) Resize(rows, cols uint16) error {
	return proto.WriteJSON(s.s.s, proto.TResize, proto.Resize{Rows: rows, Cols: cols})
}

// Signal sends a signal ("INT", "TERM") to the session's process group.
func (s *Session) Signal(name string) error {
	return proto.WriteJSON(s.s.s, proto.TSignal, proto.Signal{Name: name})
}

// Next returns the session's next output: proto.TStdout or
// proto.TStderr with its bytes, or, last, proto.TExit with the exit. It
// returns ErrDetached when the stream is detached (Close, or another
// stream took the session over). Call it from one goroutine at a time.
func (s *Session) Next() (t byte, data []byte, exit proto.Exit, err error) {
	t, data, exit, err = nextOutput(s.s.ReadFrame)
	if err != nil && s.closed.Load() {
		err = ErrDetached
	}
	return t, data, exit, err
}

// Output copies the session's output (what the guest kept, then what
// follows) to stdout and stderr (nil: discarded) until the session ends,
// and returns its exit; or until the stream is detached (ErrDetached).
func (s *Session) Output(stdout, stderr io.Writer) (proto.Exit, error) {
	return copySession(s.Next, stdout, stderr)
}

// Close detaches from the session (which runs on, for its
// MaxRunAfterDisconnect). It unblocks Next.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.s.SetDeadline(time.Now())
		s.s.Close()
	})
	return nil
}

// nextOutput reads the next output frame of a session stream with read.
func nextOutput(read func() (byte, []byte, error)) (byte, []byte, proto.Exit, error) {
	t, p, err := read()
	if errors.Is(err, io.EOF) {
		return 0, nil, proto.Exit{}, ErrDetached
	}
	if err != nil {
		return 0, nil, proto.Exit{}, fmt.Errorf("%w: session stream: %w", ErrAgent, err)
	}
	switch t {
	case proto.TStdout, proto.TStderr:
		return t, p, proto.Exit{}, nil
	case proto.TExit:
		e, err := decodeExit(p)
		return t, nil, e, err
	case proto.TEnd:
		return 0, nil, proto.Exit{}, ErrDetached
	}
	return 0, nil, proto.Exit{}, fmt.Errorf("%w: unexpected frame type %d in a session stream", ErrAgent, t)
}

// copySession copies output from next to the writers until the exit.
func copySession(next func() (byte, []byte, proto.Exit, error), stdout, stderr io.Writer) (proto.Exit, error) {
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	for {
		t, p, e, err := next()
		if err != nil {
			return proto.Exit{}, err
		}
		w := stdout
		switch t {
		case proto.TExit:
			return e, nil
		case proto.TStderr:
			w = stderr
		}
		if _, err := w.Write(p); err != nil {
			return proto.Exit{}, err
		}
	}
}

// decodeExit decodes a TExit payload and checks its code.
func decodeExit(p []byte) (proto.Exit, error) {
	var e proto.Exit
	if err := proto.DecodeJSON(p, &e); err != nil {
		return proto.Exit{}, fmt.Errorf("%w: %w", ErrAgent, err)
	}
	if err := checkExit(e); err != nil {
		return proto.Exit{}, err
	}
	return e, nil
}

func checkExit(e proto.Exit) error {
	if e.Code < 0 || e.Code > 255 {
		return fmt.Errorf("%w: exit code %d out of range", ErrAgent, e.Code)
	}
	return nil
}

// checkSessions checks what the guest said of its sessions: want of them
// (-1: at most proto.MaxSessions), with valid, distinct ids (id, when
// set: that one), a command, and sane numbers.
func checkSessions(ss []proto.SessionInfo, want int, id string) error {
	if want >= 0 && len(ss) != want || len(ss) > proto.MaxSessions {
		return fmt.Errorf("%w: %d sessions in a response, want %d", ErrAgent, len(ss), max(want, proto.MaxSessions))
	}
	seen := make(map[string]bool, len(ss))
	for _, s := range ss {
		switch {
		case !proto.ValidSessionID(s.ID):
			return fmt.Errorf("%w: session id %q is not %d hex digits", ErrAgent, s.ID, proto.SessionIDLen)
		case seen[s.ID]:
			return fmt.Errorf("%w: session %s listed twice", ErrAgent, s.ID)
		case id != "" && s.ID != id:
			return fmt.Errorf("%w: asked for session %s, got %s", ErrAgent, id, s.ID)
		case len(s.Argv) == 0:
			return fmt.Errorf("%w: session %s without a command", ErrAgent, s.ID)
		case s.OutputBytes < 0, s.MaxRunAfterDisconnect != nil && *s.MaxRunAfterDisconnect < 0:
			return fmt.Errorf("%w: session %s: negative numbers", ErrAgent, s.ID)
		}
		if s.Exit != nil {
			if err := checkExit(*s.Exit); err != nil {
				return err
			}
		}
		seen[s.ID] = true
	}
	return nil
}
