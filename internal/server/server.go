// Package server serves wispd's HTTP API (api/openapi.yaml) on a unix
// socket and, behind bearer tokens, over TCP (remote.go). Handlers decode,
// call the Manager, and encode; error kinds become status codes in
// errors.go only.
package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/auth"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/image"
	"github.com/wisp-sh/wisp/internal/meter"
	"github.com/wisp-sh/wisp/internal/sprite"
	"github.com/wisp-sh/wisp/internal/token"
)

// maxBody bounds JSON request bodies.
const maxBody = 1 << 20

// Server holds what the handlers use.
type Server struct {
	Log     *slog.Logger
	Sprites *sprite.Manager
	Images  *image.Store
	Doctor  func(ctx context.Context) any // the host report of `wisp doctor`
	Version string
	// FrontDoor is the address the front door listens on ("" off), and
	// URLKey signs the credentials of signed URLs.
	FrontDoor string
	URLKey    *auth.Key
	// Meter measures sprites' use (nil: none).
	Meter *meter.Meter
	// Metrics is the Prometheus registry /metrics serves (nil: none).
	Metrics *meter.Metrics
	// PortWait bounds how long a connect that woke or started a sprite
	// waits for the port to listen (0: 10 s).
	PortWait time.Duration

	// Tokens open the API over TCP (RemoteHandler); their management
	// routes are served on the unix socket. Nil: no TCP, no tokens.
	Tokens *token.Store
	// Listen is the address the API listens on over TCP ("" off), for
	// GET /v1/version.
	Listen string
	// E2B, when set, serves the E2B-compatible API on the TCP listener:
	// requests E2BMatch picks (nil: IsE2B) go to it before any wisp token
	// check; it authenticates them itself.
	E2B      http.Handler
	E2BMatch func(*http.Request) bool
}

// Bounds of the API's and the front door's connections: a request's
// header size, how long a client may take to send it, idle keep-alives.
// No read or write timeout: exec, console, copy and proxied streams last
// as long as they last.
const (
	ReadHeaderTimeout = 10 * time.Second
	IdleTimeout       = 2 * time.Minute
	MaxHeaderBytes    = 64 << 10
)

// HTTPServer returns the http.Server of the API, its connections bounded:
// a client that sends a header slowly, a huge header, or keeps idle
// connections open is cut off.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", s.version)
	mux.HandleFunc("GET /v1/doctor", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, s.Doctor(r.Context())) })
	mux.HandleFunc("GET /v1/sprites", s.list)
	mux.HandleFunc("POST /v1/sprites", s.create)
	mux.HandleFunc("GET /v1/sprites/{name}", s.get)
	mux.HandleFunc("DELETE /v1/sprites/{name}", s.destroy)
	mux.HandleFunc("POST /v1/sprites/{name}/start", s.start)
	mux.HandleFunc("POST /v1/sprites/{name}/stop", s.stop)
	mux.HandleFunc("GET /v1/sprites/{name}/logs", s.logs)
	mux.HandleFunc("POST /v1/sprites/{name}/stream", s.stream)
	mux.HandleFunc("GET /v1/sprites/{name}/fs/stat", s.fsStat)
	mux.HandleFunc("GET /v1/sprites/{name}/fs/list", s.fsList)
	mux.HandleFunc("POST /v1/sprites/{name}/fs/mkdir", s.fsMkdir)
	mux.HandleFunc("DELETE /v1/sprites/{name}/fs", s.fsRemove)
	mux.HandleFunc("PATCH /v1/sprites/{name}", s.update)
	mux.HandleFunc("POST /v1/sprites/{name}/sleep", s.sleep)
	mux.HandleFunc("GET /v1/sprites/{name}/policy", s.getPolicy)
	mux.HandleFunc("PUT /v1/sprites/{name}/policy", s.setPolicy)
	mux.HandleFunc("POST /v1/sprites/{name}/url", s.url)
	mux.HandleFunc("POST /v1/sprites/{name}/connect", s.connect)
	mux.HandleFunc("POST /v1/sprites/{name}/restore", s.restore)
	mux.HandleFunc("POST /v1/sprites/{name}/fork", s.fork)
	mux.HandleFunc("GET /v1/sprites/{name}/checkpoints", s.listCheckpoints)
	mux.HandleFunc("POST /v1/sprites/{name}/checkpoints", s.createCheckpoint)
	mux.HandleFunc("GET /v1/sprites/{name}/checkpoints/{id}", s.getCheckpoint)
	mux.HandleFunc("DELETE /v1/sprites/{name}/checkpoints/{id}", s.deleteCheckpoint)
	mux.HandleFunc("GET /v1/sprites/{name}/services", s.listServices)
	mux.HandleFunc("POST /v1/sprites/{name}/services", s.addService)
	mux.HandleFunc("DELETE /v1/sprites/{name}/services/{svc}", s.removeService)
	mux.HandleFunc("GET /v1/sprites/{name}/services/{svc}/logs", s.serviceLogs)
	s.secretRoutes(mux)
	s.imageRoutes(mux)
	if s.Tokens != nil {
		s.tokenRoutes(mux)
	}
	s.usageRoutes(mux)
	s.metricsRoutes(mux)
	return s.countRequests(s.logRequests(mux))
}

func (s *Server) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Log.Debug("request", "method", r.Method, "path", r.URL.Path)
		h.ServeHTTP(w, r)
	})
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request body: %v: %w", err, errdefs.ErrInvalid)
	}
	return nil
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	v := map[string]string{"version": s.Version}
	if s.Listen != "" {
		v["listen"] = s.Listen
	}
	writeJSON(w, 200, v)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, visible(r, s.Sprites.List(), func(sp sprite.Sprite) string { return sp.Name }))
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var o sprite.CreateOptions
	if err := decode(r, &o); err != nil {
		writeError(w, err)
		return
	}
	sp, err := s.Sprites.Create(r.Context(), o)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, sp)
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	sp, err := s.Sprites.Get(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, sp)
}

func (s *Server) destroy(w http.ResponseWriter, r *http.Request) {
	if err := s.Sprites.Destroy(r.Context(), r.PathValue("name")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) start(w http.ResponseWriter, r *http.Request) {
	sp, err := s.Sprites.Start(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, sp)
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request) {
	sp, err := s.Sprites.Stop(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, sp)
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	sp, err := s.Sprites.Get(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	f, err := os.Open(s.Sprites.ConsolePath(sp))
	if os.IsNotExist(err) {
		w.Header().Set("Content-Type", "text/plain")
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	defer f.Close()
	if tail, _ := strconv.ParseInt(r.URL.Query().Get("tail_bytes"), 10, 64); tail > 0 {
		if fi, err := f.Stat(); err == nil && fi.Size() > tail {
			f.Seek(fi.Size()-tail, io.SeekStart)
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	io.Copy(w, f)
}

// streamOps are the requests that carry a stream after the 101.
var streamOps = map[string]bool{
	proto.OpExec: true, proto.OpRead: true, proto.OpWrite: true, proto.OpTarIn: true, proto.OpTarOut: true,
}

// Frames each side may send through the relay.
var (
	fromClient = map[byte]bool{proto.TStdin: true, proto.TCloseStdin: true, proto.TResize: true, proto.TSignal: true, proto.TData: true, proto.TEnd: true}
	fromGuest  = map[byte]bool{proto.TResponse: true, proto.TStdout: true, proto.TStderr: true, proto.TExit: true, proto.TData: true, proto.TEnd: true}
)

// UpgradeProto is the protocol name of the stream upgrade.
const UpgradeProto = "wisp-stream"

// stream opens an agent stream for the request in the body, answers 101
// and relays frames both ways, checking each frame's type and size.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), UpgradeProto) {
		writeError(w, fmt.Errorf("stream needs `Upgrade: %s`: %w", UpgradeProto, errdefs.ErrInvalid))
		return
	}
	var req proto.Request
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if !streamOps[req.Op] {
		writeError(w, fmt.Errorf("op %q cannot be streamed: %w", req.Op, errdefs.ErrInvalid))
		return
	}
	if req.Op == proto.OpExec && (req.Exec == nil || len(req.Exec.Argv) == 0) {
		writeError(w, fmt.Errorf("exec needs a command: %w", errdefs.ErrInvalid))
		return
	}
	name := r.PathValue("name")
	if req.Op == proto.OpExec {
		// The sprite's env and secrets, under what the request sets.
		env, err := s.Sprites.ExecEnv(name)
		if err != nil {
			writeError(w, err)
			return
		}
		ex := *req.Exec
		ex.Env = sprite.MergeEnv(env, ex.Env)
		req.Exec = &ex
	}
	ag, release, err := s.Sprites.Agent(r.Context(), name)
	if err != nil {
		writeError(w, err)
		return
	}
	defer release() // the sprite is active while the stream is open
	st, err := ag.Open(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	defer st.Close()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, err)
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", UpgradeProto)
	if err := brw.Flush(); err != nil {
		return
	}
	go func() {
		// Client to guest; ends when the client closes its side.
		for {
			t, p, err := proto.ReadFrame(brw.Reader, proto.MaxFrame)
			if err != nil || !fromClient[t] {
				st.Close()
				return
			}
			if err := st.WriteFrame(t, p); err != nil {
				return
			}
		}
	}()
	// Guest to client, until the guest ends the stream.
	out := bufio.NewWriterSize(conn, 256<<10)
	for {
		t, p, err := st.ReadFrame()
		if err != nil {
			if err != io.EOF {
				s.Log.Debug("stream from guest", sprite.LogSprite, name, sprite.LogErr, err)
			}
			break
		}
		if !fromGuest[t] {
			s.Log.Warn("guest sent a frame of a type not allowed here", sprite.LogSprite, name, "type", t)
			break
		}
		if proto.WriteFrame(out, t, p) != nil {
			break
		}
		if t == proto.TExit || st.Buffered() == 0 {
			if out.Flush() != nil {
				break
			}
		}
	}
	out.Flush()
}

func (s *Server) fsStat(w http.ResponseWriter, r *http.Request) {
	ag, release, err := s.Sprites.Agent(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	fi, err := ag.Stat(r.Context(), r.URL.Query().Get("path"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, fi)
}

func (s *Server) fsList(w http.ResponseWriter, r *http.Request) {
	ag, release, err := s.Sprites.Agent(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	files, truncated, err := ag.List(r.Context(), r.URL.Query().Get("path"))
	if err != nil {
		writeError(w, err)
		return
	}
	if files == nil {
		files = []proto.FileInfo{}
	}
	writeJSON(w, 200, map[string]any{"files": files, "truncated": truncated})
}

// MkdirRequest is the body of fs/mkdir.
type MkdirRequest struct {
	Path      string `json:"path"`
	Mode      uint32 `json:"mode,omitempty"`
	Recursive bool   `json:"recursive,omitempty"`
}

func (s *Server) fsMkdir(w http.ResponseWriter, r *http.Request) {
	var req MkdirRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	ag, release, err := s.Sprites.Agent(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	if err := ag.Mkdir(r.Context(), req.Path, req.Mode, req.Recursive); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) fsRemove(w http.ResponseWriter, r *http.Request) {
	ag, release, err := s.Sprites.Agent(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	q := r.URL.Query()
	if err := ag.Remove(r.Context(), q.Get("path"), q.Get("recursive") == "true"); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
