package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/sprite"
)

// ExecBackend runs the commands of exec WebSockets (GET
// /v1/sprites/{name}/exec). Server.Exec nil means AgentExec: the
// guest agent's exec, whose command ends with its client.
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
	// Close detaches the client; it unblocks Next. What happens to the
	// command is the backend's business (AgentExec ends it).
	Close() error
}

// errAttach is what a backend without sessions answers an attach.
var errAttach = errors.New("attaching to an exec session is not implemented by this wispd")

func (s *Server) execRoutes(mux *router) {
	mux.HandleFunc("GET /v1/sprites/{name}/exec", s.exec)
}

func (s *Server) execBackend() ExecBackend {
	if s.Exec != nil {
		return s.Exec
	}
	return AgentExec{Sprites: s.Sprites}
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
	var sess ExecSession
	if req.ID != "" {
		sess, err = be.Attach(r.Context(), name, req)
	} else {
		sess, err = be.Start(r.Context(), name, req)
	}
	if errors.Is(err, errAttach) {
		writeJSON(w, http.StatusNotImplemented, api.ErrorBody{Error: api.Error{Code: api.CodeNotImplemented, Message: err.Error()}})
		return
	}
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
			conn.Close(websocket.StatusNormalClosure, "")
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

// AgentExec runs each exec as one agent exec stream: its session ends
// with its client, and attaching is not possible.
type AgentExec struct {
	Sprites *sprite.Manager
}

var _ ExecBackend = AgentExec{}

func (a AgentExec) Start(ctx context.Context, name string, req api.ExecRequest) (ExecSession, error) {
	env, err := a.Sprites.ExecEnv(name)
	if err != nil {
		return nil, err
	}
	ag, release, err := a.Sprites.Agent(ctx, name)
	if err != nil {
		return nil, err
	}
	st, err := ag.Open(ctx, proto.Request{Op: proto.OpExec, Exec: &proto.ExecRequest{
		Argv: req.Cmd, Env: sprite.MergeEnv(env, req.Env), Dir: req.Dir, User: req.User,
		TTY: req.TTY, Cols: uint16(req.Cols), Rows: uint16(req.Rows),
	}})
	if err != nil {
		release()
		return nil, err
	}
	as := &agentSession{id: newSessionID(), st: st, release: release}
	if !req.Stdin {
		as.CloseStdin()
	}
	return as, nil
}

func (AgentExec) Attach(context.Context, string, api.ExecRequest) (ExecSession, error) {
	return nil, errAttach
}

func newSessionID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// agentSession is one agent exec stream.
type agentSession struct {
	id      string
	st      *agent.Stream
	release func()
	exit    []byte // an exit held back behind a start error's message
	once    sync.Once
	// stdinDone: stdin was closed; what a client sends after is dropped.
	stdinDone atomic.Bool
}

func (a *agentSession) ID() string { return a.id }

func (a *agentSession) Next() (byte, []byte, error) {
	if a.exit != nil {
		return api.StreamExit, a.exit, nil
	}
	for {
		t, p, err := a.st.ReadFrame()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
		switch t {
		case proto.TStdout:
			return api.StreamStdout, p, nil
		case proto.TStderr:
			return api.StreamStderr, p, nil
		case proto.TExit:
			var e proto.Exit
			if err := proto.DecodeJSON(p, &e); err != nil {
				return 0, nil, err
			}
			code := []byte{byte(min(max(e.Code, 0), 255))}
			if e.Error != "" {
				// The command could not start: say why on stderr.
				a.exit = code
				return api.StreamStderr, []byte("wisp: " + e.Error + "\n"), nil
			}
			return api.StreamExit, code, nil
		default:
			return 0, nil, fmt.Errorf("unexpected frame type %d in an exec stream", t)
		}
	}
}

func (a *agentSession) Stdin(p []byte) error {
	for len(p) > 0 && !a.stdinDone.Load() {
		n := min(len(p), proto.ChunkSize)
		if err := a.st.WriteFrame(proto.TStdin, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

func (a *agentSession) CloseStdin() error {
	if a.stdinDone.Swap(true) {
		return nil
	}
	return a.st.WriteFrame(proto.TCloseStdin, nil)
}

func (a *agentSession) Resize(cols, rows int) error {
	b, _ := json.Marshal(proto.Resize{Cols: uint16(cols), Rows: uint16(rows)})
	return a.st.WriteFrame(proto.TResize, b)
}

func (a *agentSession) Close() error {
	err := a.st.Close()
	a.once.Do(a.release)
	return err
}
