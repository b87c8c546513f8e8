package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/sprite"
)

// ExecBackend runs the commands of exec WebSockets (GET
// /v1/sprites/{name}/exec). Server.Exec nil means SessionExec: sessions
// in the guest agent, which outlive their client.
type ExecBackend interface {
	// Start starts req (Cmd set) in sprite name, waking or starting it.
	// Errors: errdefs kinds (not found, wrong state...).
	Start(ctx context.Context, name string, req api.ExecRequest) (ExecSession, error)
	// Attach attaches to session req.ID of sprite name.
	Attach(ctx context.Context, name string, req api.ExecRequest) (ExecSession, error)
}

// ExecSession is one client's attachment to a command. Next is called
// from one goroutine; Stdin, CloseStdin and Resize from another.
type ExecSession interface {
	// ID names the session (what `id=` attaches to).
	ID() string
	// Next returns the command's next output: api.StreamStdout or
	// api.StreamStderr with data, or, last, api.StreamExit with the one
	// byte of exit code. An error means the stream broke.
	Next() (stream byte, data []byte, err error)
	Stdin(p []byte) error
	CloseStdin() error
	Resize(cols, rows int) error
	// Close detaches the client; it unblocks Next. The command runs on
	// for its max run after disconnect.
	Close() error
}

func (s *Server) execRoutes(mux *router) {
	mux.HandleFunc("GET /v1/sprites/{name}/exec", s.exec)
	s.sessionRoutes(mux)
}

func (s *Server) execBackend() ExecBackend {
	if s.Exec != nil {
		return s.Exec
	}
	return SessionExec{Sprites: s.Sprites}
}

// exec upgrades to a WebSocket speaking the exec framing of api/exec.go:
// the session message, then output until the exit frame, while the
// client's stdin, stdin EOF and resizes go the other way.
func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	req, err := api.ParseExecRequest(r.URL.Query())
	if err != nil {
		writeError(w, fmt.Errorf("%w: %w", err, errdefs.ErrInvalid))
		return
	}
	name := r.PathValue("name")
	be := s.execBackend()
	t0 := time.Now()
	var sess ExecSession
	if req.ID != "" {
		sess, err = be.Attach(r.Context(), name, req)
	} else {
		sess, err = be.Start(r.Context(), name, req)
	}
	tStart := time.Since(t0)
	if err != nil {
		writeError(w, err)
		return
	}
	defer sess.Close()
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept answered the client
	}
	defer conn.CloseNow()
	conn.SetReadLimit(api.MaxExecMessage)
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	hello, _ := json.Marshal(api.SessionMessage{Type: "session", ID: sess.ID()})
	if err := conn.Write(ctx, websocket.MessageText, hello); err != nil {
		return
	}
	tHello := time.Since(t0)
	go func() {
		// Client to command. A client that goes away or breaks the
		// protocol detaches: Close unblocks Next below.
		err := s.execInput(ctx, conn, sess)
		if err != nil && ctx.Err() == nil {
			s.Log.Debug("exec client gone", sprite.LogSprite, name, sprite.LogErr, err)
		}
		sess.Close()
	}()
	for {
		stream, data, err := sess.Next()
		if errors.Is(err, agent.ErrDetached) {
			conn.Close(api.CloseDetached, "detached: another client attached to the session")
			return
		}
		if err != nil {
			conn.Close(websocket.StatusInternalError, "exec stream broke")
			return
		}
		msg := make([]byte, 1+len(data))
		msg[0] = stream
		copy(msg[1:], data)
		if err := conn.Write(ctx, websocket.MessageBinary, msg); err != nil {
			return
		}
		if stream == api.StreamExit {
			tExit := time.Since(t0)
			conn.Close(websocket.StatusNormalClosure, "")
			s.Log.Debug("exec timing", sprite.LogSprite, name, "start", tStart, "hello", tHello, "exit", tExit, "closed", time.Since(t0))
			return
		}
	}
}

// execInput relays the client's messages to sess until the client closes
// (or breaks the protocol). Errors of delivery do not end it: a command
// that exited while its client still sent stdin must still have its exit
// reported.
func (s *Server) execInput(ctx context.Context, conn *websocket.Conn, sess ExecSession) error {
	for {
		typ, p, err := conn.Read(ctx)
		if err != nil {
			return err
		}
		if typ == websocket.MessageText {
			var m api.ResizeMessage
			if err := json.Unmarshal(p, &m); err != nil || m.Check() != nil {
				conn.Close(websocket.StatusPolicyViolation, "bad text message: want a resize")
				return fmt.Errorf("bad text message")
			}
			sess.Resize(m.Cols, m.Rows) // fails only once the command is gone: Next says how it ended
			continue
		}
		if len(p) == 0 {
			continue
		}
		// Stdin that cannot be delivered (the command has exited, or
		// closed its stdin) is dropped; the client stays attached for
		// the rest of the output and the exit, which Next reports.
		switch p[0] {
		case api.StreamStdin:
			sess.Stdin(p[1:])
		case api.StreamStdinEOF:
			sess.CloseStdin()
		default:
			conn.Close(websocket.StatusPolicyViolation, "bad stream byte: want stdin or stdin EOF")
			return fmt.Errorf("bad stream byte %d", p[0])
		}
	}
}
