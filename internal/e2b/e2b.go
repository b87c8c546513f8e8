// Package e2b serves E2B's API, so that code written for the published
// e2b SDKs runs unchanged against wispd: the control plane (sandboxes:
// create, list, info, timeout, pause, connect, kill, metrics) and, routed
// by the E2b-Sandbox-Id header on the same listener, each sandbox's
// "envd" (health, files, env, and the Connect-RPC services process.Process
// and filesystem.Filesystem).
//
// A sandbox is a sprite named by the sandbox's ID; this package keeps what
// E2B adds (template, metadata, timeout, access token) in a file of its
// own, and runs processes over the guest agent's exec with a process table
// per sandbox in the daemon.
package e2b

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/e2b/envd/filesystem/filesystemconnect"
	"github.com/wisp-sh/wisp/internal/e2b/envd/process/processconnect"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/sprite"
)

// EnvdVersion is the envd version sandboxes report: the SDKs turn
// features on by it (0.5.7: octet-stream uploads; 0.6.3: watch events
// with entries; 0.6.4: watches on network mounts).
const EnvdVersion = "0.6.4"

// Sprites is what the handler needs of the sprite Manager.
type Sprites interface {
	// Create makes and boots a sprite (errdefs.ErrInvalid, ErrExists...).
	Create(ctx context.Context, o sprite.CreateOptions) (sprite.Sprite, error)
	// Get returns a sprite with its usage figures (ErrNotFound).
	Get(name string) (sprite.Sprite, error)
	// Record returns a sprite's record, cheaply (ErrNotFound).
	Record(name string) (sprite.Sprite, error)
	// Destroy removes a sprite in any state but a transition.
	Destroy(ctx context.Context, name string) error
	// Fork makes sprite newName from name's disk as it is now (from "")
	// and boots it.
	Fork(ctx context.Context, name, from, newName string) (sprite.Sprite, error)
	// Stop shuts a sprite down, its filesystem flushed.
	Stop(ctx context.Context, name string) (sprite.Sprite, error)
	// Sleep saves a running sprite's memory to disk and ends its VM.
	Sleep(ctx context.Context, name string) (sprite.Sprite, error)
	// Agent wakes (or starts) the sprite and returns its agent, the
	// sprite held active until release.
	Agent(ctx context.Context, name string) (*agent.Client, func(), error)
	// ExecEnv is the environment every exec of the sprite gets.
	ExecEnv(name string) ([]string, error)
	// SetURLPublic opens the sprite's URL to anyone.
	SetURLPublic(name string, public bool) (sprite.Sprite, error)
}

var _ Sprites = (*sprite.Manager)(nil)

// Images is what the handler needs of the image store: a template's image
// made ready for E2B (its user made) is saved as an image of its own, so
// later sandboxes of the template start with the user (template.go).
type Images interface {
	// Built returns when image name was built or saved and the size of
	// its root image; ok is false when there is no such image.
	Built(name string) (at time.Time, size int64, ok bool)
	// SaveSprite saves the disk of sprite as image name (replacing an
	// image of that name), recorded as derived from image from, with
	// note as its recipe.
	SaveSprite(ctx context.Context, sprite, name, from, note string) error
	// Notes returns the images whose recipe's note starts with prefix:
	// name -> note.
	Notes(prefix string) (map[string]string, error)
	// Remove removes image name.
	Remove(name string) error
}

// Options configure a Handler.
type Options struct {
	Log     *slog.Logger
	Sprites Sprites
	// DataDir holds the sandboxes' file (DataDir/e2b/sandboxes.json).
	DataDir string
	// Authenticate checks a control-plane request's credential (E2B's
	// X-API-KEY header); nil refuses every request.
	Authenticate func(r *http.Request) error
	// Domain is what getHost(port) appends to PORT-ID: the front door's
	// E2B form, "e2b.localhost:7780". Empty: the SDK's own default.
	Domain string
	// Backend, CPUs, MemoryMiB of new sandboxes (zero: the daemon's).
	Backend   string
	CPUs      int
	MemoryMiB int
	// MaxProcs bounds the processes one sandbox runs through envd at
	// once (default 32; the guest agent allows 64 streams).
	MaxProcs int
	// Usage, when set, returns the meter's last sample of a sprite: CPU
	// (percent of one core) and memory the host sees it use.
	Usage func(sprite string) (cpuPercent float64, memoryBytes int64, ok bool)
	// Images, when set, keeps each template's image with E2B's user made
	// (nil: the user is made at every create).
	Images Images
	// RealLogin runs every `bash -l -c` as it is, without the login
	// environments login.go keeps.
	RealLogin bool
}

// Handler is the http.Handler of E2B's API.
type Handler struct {
	opt   Options
	log   *slog.Logger
	store *store
	api   *http.ServeMux
	envd  *http.ServeMux

	mu   sync.Mutex
	live map[string]*live // per sandbox: processes, watchers, homes

	logins singleflight.Group // login shells being run (login.go)

	tplMu   sync.Mutex
	tplDone map[string]bool // templates whose image was derived by this daemon

	closing context.Context
	close   context.CancelFunc
	wg      sync.WaitGroup
}

// New opens the sandboxes' file and returns the handler; Close stops its
// timeout loop.
func New(opt Options) (*Handler, error) {
	if opt.MaxProcs == 0 {
		opt.MaxProcs = 32
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	st, err := openStore(filepath.Join(opt.DataDir, "e2b", "sandboxes.json"))
	if err != nil {
		return nil, err
	}
	h := &Handler{opt: opt, log: opt.Log, store: st, live: map[string]*live{}, tplDone: map[string]bool{}}
	h.closing, h.close = context.WithCancel(context.Background())
	h.routes()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.timeoutLoop(h.closing, 250*time.Millisecond)
	}()
	return h, nil
}

// Close stops the timeout loop and ends the processes' streams.
func (h *Handler) Close() error {
	h.close()
	h.wg.Wait()
	h.mu.Lock()
	for _, l := range h.live {
		l.closeAll()
	}
	h.mu.Unlock()
	return nil
}

func (h *Handler) routes() {
	a := http.NewServeMux()
	a.HandleFunc("POST /sandboxes", h.create)
	a.HandleFunc("POST /v2/sandboxes", h.create)
	a.HandleFunc("GET /sandboxes", h.listV1)
	a.HandleFunc("GET /v2/sandboxes", h.list)
	a.HandleFunc("GET /sandboxes/{id}", h.info)
	a.HandleFunc("DELETE /sandboxes/{id}", h.kill)
	a.HandleFunc("POST /sandboxes/{id}/timeout", h.setTimeout)
	a.HandleFunc("POST /sandboxes/{id}/refreshes", h.refresh)
	a.HandleFunc("POST /sandboxes/{id}/pause", h.pause)
	a.HandleFunc("POST /sandboxes/{id}/resume", h.connect)
	a.HandleFunc("POST /sandboxes/{id}/connect", h.connect)
	a.HandleFunc("POST /v2/sandboxes/{id}/connect", h.connect)
	a.HandleFunc("GET /sandboxes/{id}/metrics", h.metrics)
	a.HandleFunc("POST /sandboxes/{id}/fork", h.fork)
	a.HandleFunc("POST /sandboxes/{id}/snapshots", h.snapshot)
	a.HandleFunc("GET /snapshots", h.snapshots)
	a.HandleFunc("DELETE /templates/{id}", h.deleteSnapshot)
	a.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, fmt.Sprintf("%s %s is not part of the E2B API wisp serves", r.Method, r.URL.Path))
	})
	h.api = a

	e := http.NewServeMux()
	e.HandleFunc("GET /health", h.health)
	e.HandleFunc("GET /envs", h.envs)
	e.HandleFunc("GET /files", h.readFile)
	e.HandleFunc("POST /files", h.writeFiles)
	p, ph := processconnect.NewProcessHandler(&processService{h: h})
	e.Handle(p, ph)
	f, fh := filesystemconnect.NewFilesystemHandler(&filesystemService{h: h})
	e.Handle(f, fh)
	e.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, fmt.Sprintf("%s %s is not part of envd", r.Method, r.URL.Path))
	})
	h.envd = e
}

// SandboxHeader routes a request to a sandbox's envd.
const SandboxHeader = "E2b-Sandbox-Id"

// IsE2B reports whether r is for this handler: an envd request (it names a
// sandbox), a signed file URL, or a path of E2B's control plane (those it
// does not serve, templates and snapshots, get E2B's 404).
func IsE2B(r *http.Request) bool {
	if r.Header.Get(SandboxHeader) != "" {
		return true
	}
	p := r.URL.Path
	if p == "/files" && r.URL.Query().Get("signature") != "" {
		return true
	}
	for _, pre := range []string{"/sandboxes", "/v2/sandboxes", "/templates", "/v2/templates", "/snapshots"} {
		if p == pre || hasPrefix(p, pre+"/") {
			return true
		}
	}
	return false
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// ServeHTTP serves the control plane, or a sandbox's envd when the
// request names one.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if id := r.Header.Get(SandboxHeader); id != "" {
		h.serveEnvd(w, r, id)
		return
	}
	if r.URL.Path == "/files" && r.URL.Query().Get("signature") != "" {
		// A signed file URL, opened by anyone: the sandbox whose token
		// signed it.
		if sb, ok := h.signedBy(r); ok {
			h.serveEnvd(w, r, sb.ID)
			return
		}
		apiError(w, http.StatusUnauthorized, "invalid file URL signature")
		return
	}
	if h.opt.Authenticate == nil {
		apiError(w, http.StatusUnauthorized, "no API keys are configured")
		return
	}
	if err := h.opt.Authenticate(r); err != nil {
		apiError(w, http.StatusUnauthorized, "invalid API key: "+err.Error())
		return
	}
	h.api.ServeHTTP(w, r)
}

// apiError answers E2B's error body: {code, message}.
func apiError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]any{"code": code, "message": msg})
}

// writeErr answers err with the status of its kind.
func writeErr(w http.ResponseWriter, err error) {
	msg := err.Error()
	if hint := errdefs.Hint(err); hint != "" {
		msg += " (" + hint + ")"
	}
	apiError(w, httpStatus(err), msg)
}

// httpStatus maps an error's kind to E2B's status codes.
func httpStatus(err error) int {
	var ge *agent.GuestError
	if errors.As(err, &ge) {
		switch ge.Kind {
		case proto.KindNotFound:
			return http.StatusNotFound
		case proto.KindInvalid:
			return http.StatusBadRequest
		case proto.KindExists:
			return http.StatusConflict
		case proto.KindPerm:
			return http.StatusForbidden
		}
		return http.StatusBadGateway
	}
	switch errdefs.Kind(err) {
	case errdefs.ErrNotFound:
		return http.StatusNotFound
	case errdefs.ErrExists, errdefs.ErrState:
		return http.StatusConflict
	case errdefs.ErrInvalid:
		return http.StatusBadRequest
	case errdefs.ErrUnavailable:
		return http.StatusServiceUnavailable
	case errdefs.ErrNoSpace:
		return http.StatusInsufficientStorage
	}
	if errors.Is(err, agent.ErrAgent) {
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// newID returns a sandbox ID: a letter and 19 lower-case letters and
// digits, like E2B's, and a valid sprite name.
func newID() string {
	const alpha = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 20)
	rand.Read(b)
	for i := range b {
		n := len(alpha)
		if i == 0 {
			n = 26
		}
		b[i] = alpha[int(b[i])%n]
	}
	return string(b)
}

// token returns a random hex secret of n bytes.
func token(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}
