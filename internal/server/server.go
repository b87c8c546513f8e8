// Package server serves wispd's HTTP API (api/openapi.yaml) on a unix
// socket and, behind bearer tokens, over TCP (remote.go). Handlers decode,
// call the Manager, and encode; error kinds become status codes in
// errors.go only.
package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/agent"
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

	live liveTokens // requests in flight over TCP, ended by a revoke
	// Exec runs the commands of exec WebSockets; nil: SessionExec.
	Exec ExecBackend
	// Fleet, in cluster mode, sends requests for sprites on other hosts
	// there and serves the cluster's routes; nil: this host alone.
	Fleet Fleet
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
	h, _ := s.routes()
	return h
}

// router is a ServeMux that keeps the patterns registered on it, so a
// test can hold them against api/openapi.yaml.
type router struct {
	*http.ServeMux
	patterns []string
}

func (r *router) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	r.patterns = append(r.patterns, pattern)
	r.ServeMux.HandleFunc(pattern, h)
}

// routes returns the API's handler and its patterns ("GET /v1/...").
func (s *Server) routes() (http.Handler, []string) {
	mux := &router{ServeMux: http.NewServeMux()}
	mux.HandleFunc("GET /v1/version", s.version)
	mux.HandleFunc("GET /v1/doctor", s.doctor)
	mux.HandleFunc("POST /v1/bench/net-setup", s.benchNetSetup)
	mux.HandleFunc("GET /v1/sprites", s.list)
	mux.HandleFunc("POST /v1/sprites", s.create)
	mux.HandleFunc("GET /v1/sprites/{name}", s.get)
	mux.HandleFunc("DELETE /v1/sprites/{name}", s.destroy)
	mux.HandleFunc("POST /v1/sprites/{name}/start", s.start)
	mux.HandleFunc("POST /v1/sprites/{name}/stop", s.stop)
	mux.HandleFunc("GET /v1/sprites/{name}/logs", s.logs)
	mux.HandleFunc("GET /v1/sprites/{name}/fs/stat", s.fsStat)
	mux.HandleFunc("GET /v1/sprites/{name}/fs/list", s.fsList)
	mux.HandleFunc("POST /v1/sprites/{name}/fs/mkdir", s.fsMkdir)
	mux.HandleFunc("DELETE /v1/sprites/{name}/fs", s.fsRemove)
	s.fileRoutes(mux)
	s.execRoutes(mux)
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
	s.tokenRoutes(mux)
	s.usageRoutes(mux)
	s.metricsRoutes(mux)
	s.clusterRoutes(mux)
	return s.countRequests(s.logRequests(s.routeCluster(mux))), mux.patterns
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
	writeJSON(w, 200, api.Version{Version: s.Version, Listen: s.Listen})
}

func (s *Server) doctor(w http.ResponseWriter, r *http.Request) {
	rep, err := s.doctorReport(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, rep)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	out := apiSprites(visible(r, s.Sprites.List(), func(sp sprite.Sprite) string { return sp.Name }))
	if s.Fleet != nil {
		for i := range out {
			s.placed(r.Context(), &out[i])
		}
		if _, fwd := s.forwarded(r); !fwd || r.Header.Get(headerLocal) == "" {
			more, err := s.Fleet.Sprites(r.Context(), callerJSON(r))
			if err != nil {
				writeError(w, err)
				return
			}
			out = append(out, visible(r, more, func(sp api.Sprite) string { return sp.Name })...)
			slices.SortFunc(out, func(a, b api.Sprite) int { return strings.Compare(a.Name, b.Name) })
		}
	}
	writeJSON(w, 200, out)
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var req api.CreateRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	sp, err := s.Sprites.Create(r.Context(), createOptions(req))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, apiSprite(sp))
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	sp, err := s.Sprites.Get(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	out := apiSprite(sp)
	if s.Meter != nil {
		out.Capped = s.Meter.Capped(sp.ID)
	}
	s.placed(r.Context(), &out)
	writeJSON(w, 200, out)
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
	writeJSON(w, 200, apiSprite(sp))
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request) {
	sp, err := s.Sprites.Stop(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, apiSprite(sp))
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

func (s *Server) fsStat(w http.ResponseWriter, r *http.Request) {
	s.withAgent(w, r, func(ag *agent.Client) error {
		fi, err := ag.Stat(r.Context(), r.URL.Query().Get("path"))
		if err != nil {
			return err
		}
		writeJSON(w, 200, apiFileInfo(fi))
		return nil
	})
}

func (s *Server) fsList(w http.ResponseWriter, r *http.Request) {
	s.withAgent(w, r, func(ag *agent.Client) error {
		files, truncated, err := ag.List(r.Context(), r.URL.Query().Get("path"))
		if err != nil {
			return err
		}
		out := api.FileList{Files: []api.FileInfo{}, Truncated: truncated}
		for _, f := range files {
			out.Files = append(out.Files, apiFileInfo(f))
		}
		writeJSON(w, 200, out)
		return nil
	})
}

func (s *Server) fsMkdir(w http.ResponseWriter, r *http.Request) {
	var req api.MkdirRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	s.withAgent(w, r, func(ag *agent.Client) error {
		if err := ag.Mkdir(r.Context(), req.Path, req.Mode, req.Recursive); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

func (s *Server) fsRemove(w http.ResponseWriter, r *http.Request) {
	s.withAgent(w, r, func(ag *agent.Client) error {
		q := r.URL.Query()
		if err := ag.Remove(r.Context(), q.Get("path"), q.Get("recursive") == "true"); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}
