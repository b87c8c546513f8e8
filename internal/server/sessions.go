package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/sprite"
)

// Exec sessions: every exec WebSocket is a session of the guest agent
// (agent.StartSession). The session lives in the guest, so it outlives
// its WebSocket (a client that goes detaches; the command runs on for its
// max_run_after_disconnect), the daemon (a restarted wispd finds it in the
// sprite it re-adopts) and a sleep (the guest's memory is saved).

func (s *Server) sessionRoutes(mux *router) {
	mux.HandleFunc("GET /v1/sprites/{name}/sessions", s.listSessions)
	mux.HandleFunc("DELETE /v1/sprites/{name}/sessions/{id}", s.killSession)
}

// SessionExec is the ExecBackend of guest sessions.
type SessionExec struct {
	Sprites *sprite.Manager
}

var _ ExecBackend = SessionExec{}

// Start starts req as a session, waking or starting the sprite. The
// session's client holds the sprite awake while it is attached.
func (b SessionExec) Start(ctx context.Context, name string, req api.ExecRequest) (ExecSession, error) {
	env, err := b.Sprites.ExecEnv(name)
	if err != nil {
		return nil, err
	}
	ag, release, err := b.Sprites.Agent(ctx, name)
	if err != nil {
		return nil, err
	}
	s, err := ag.StartSession(ctx, proto.ExecRequest{
		Argv: req.Cmd, Env: sprite.MergeEnv(env, req.Env), Dir: req.Dir, User: req.User,
		TTY: req.TTY, Cols: uint16(req.Cols), Rows: uint16(req.Rows),
	}, proto.SessionRequest{Stdin: req.Stdin, MaxRunAfterDisconnect: req.MaxRunAfterDisconnect})
	if err != nil {
		release()
		return nil, sessionError(err)
	}
	return &guestSession{s: s, release: release}, nil
}

// Attach attaches to session req.ID, taking it from the client that had
// it; the terminal takes req's size when it has one.
func (b SessionExec) Attach(ctx context.Context, name string, req api.ExecRequest) (ExecSession, error) {
	ag, release, err := b.Sprites.Agent(ctx, name)
	if err != nil {
		return nil, err
	}
	s, err := ag.AttachSession(ctx, req.ID)
	if err != nil {
		release()
		return nil, sessionError(err)
	}
	gs := &guestSession{s: s, release: release}
	if s.Info.TTY && req.Cols > 0 && req.Rows > 0 {
		gs.Resize(req.Cols, req.Rows)
	}
	return gs, nil
}

// sessionError gives the guest's refusals the words a client needs.
func sessionError(err error) error {
	var ge *agent.GuestError
	if errors.As(err, &ge) && ge.Kind == proto.KindLimit {
		return errdefs.WithHint(err, "list them with `wisp sessions NAME` and end one with `wisp sessions kill NAME ID`")
	}
	return err
}

// guestSession is one client's attachment to a guest session.
type guestSession struct {
	s       *agent.Session
	release func()
	exit    []byte // an exit held back behind a start error's message
	once    sync.Once
}

func (g *guestSession) ID() string { return g.s.Info.ID }

func (g *guestSession) Next() (byte, []byte, error) {
	if g.exit != nil {
		return api.StreamExit, g.exit, nil
	}
	t, p, e, err := g.s.Next()
	switch {
	case err != nil:
		return 0, nil, err
	case t == proto.TStdout:
		return api.StreamStdout, p, nil
	case t == proto.TStderr:
		return api.StreamStderr, p, nil
	}
	code := []byte{byte(e.Code)} // 0-255: the agent checked it
	if e.Error != "" {
		// The command could not start: say why on stderr.
		g.exit = code
		return api.StreamStderr, []byte("wisp: " + e.Error + "\n"), nil
	}
	return api.StreamExit, code, nil
}

func (g *guestSession) Stdin(p []byte) error {
	_, err := g.s.Write(p)
	return err
}

func (g *guestSession) CloseStdin() error { return g.s.CloseStdin() }

func (g *guestSession) Resize(cols, rows int) error {
	return g.s.Resize(uint16(min(rows, api.MaxTermSize)), uint16(min(cols, api.MaxTermSize)))
}

// Close detaches: the session runs on for its max run after disconnect.
func (g *guestSession) Close() error {
	err := g.s.Close()
	g.once.Do(g.release)
	return err
}

// sessionAgent returns the agent of a sprite for a call about its
// sessions; nil for a stopped sprite (it has none: it is not booted for
// the asking). A sleeping one is woken: its sessions are in its memory.
func (s *Server) sessionAgent(ctx context.Context, name string) (*agent.Client, func(), error) {
	sp, err := s.Sprites.Get(name)
	if err != nil {
		return nil, nil, err
	}
	if sp.State == sprite.Stopped {
		return nil, func() {}, nil
	}
	return s.Sprites.Agent(ctx, name)
}

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) {
	ag, release, err := s.sessionAgent(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	out := []api.Session{}
	if ag != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		list, err := ag.Sessions(ctx)
		if err != nil {
			writeError(w, err)
			return
		}
		for _, si := range list {
			out = append(out, apiSession(si))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// killSession ends a session (TERM, then KILL after a grace period) and
// answers once it has; with ?signal=NAME it only sends that signal.
func (s *Server) killSession(w http.ResponseWriter, r *http.Request) {
	name, id := r.PathValue("name"), r.PathValue("id")
	ag, release, err := s.sessionAgent(r.Context(), name)
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	if ag == nil {
		writeError(w, fmt.Errorf("sprite %q is stopped: no session %q runs in it: %w", name, id, errdefs.ErrNotFound))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	if err := ag.KillSession(ctx, id, r.URL.Query().Get("signal")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func apiSession(si proto.SessionInfo) api.Session {
	out := api.Session{ID: si.ID, Command: si.Argv, TTY: si.TTY, Started: si.Started, Attached: si.Attached, Running: si.Exit == nil}
	if si.Exit != nil {
		code := si.Exit.Code
		out.ExitCode = &code
	}
	if d := si.MaxRunAfterDisconnect; d != nil {
		v := api.Duration(*d)
		out.MaxRunAfterDisconnect = &v
	}
	return out
}
