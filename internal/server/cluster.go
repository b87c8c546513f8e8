package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/sprite"
	"github.com/wisp-sh/wisp/internal/token"
)

// Fleet spreads the API over a cluster of hosts (cluster mode; nil: this
// host alone). Callers are the JSON of the token a request came with (nil:
// the unix socket's full access).
type Fleet interface {
	ID() string
	// Route returns nil when this host serves a request for sprite name
	// (it has it, or just took it), else a handler that forwards it to
	// the host that has it.
	Route(r *http.Request, name string, caller []byte) (http.Handler, error)
	// Trusted reports whether r came from another host of the cluster,
	// and the caller it was forwarded for.
	Trusted(r *http.Request) (caller []byte, ok bool)
	// Placement is the host that has a sprite and its last published
	// generation.
	Placement(ctx context.Context, name string) (host string, generation uint64)
	Hosts(ctx context.Context) ([]api.Host, error)
	// Peek is the record of a sprite at rest on no host, as published,
	// read without claiming it (ok false: a host has it, or none does).
	Peek(ctx context.Context, name string) (rec sprite.Sprite, generation uint64, ok bool, err error)
	// Sprites are the cluster's sprites that are not on this host.
	Sprites(ctx context.Context, caller []byte) ([]api.Sprite, error)
	Move(ctx context.Context, name, to string, caller []byte) error
	Claim(ctx context.Context, name string) error
	Drain(ctx context.Context, id string, caller []byte) ([]string, error)
}

// headerLocal marks a request from another host that wants this host's
// own sprites only.
const headerLocal = "Wisp-Local"

func (s *Server) clusterRoutes(mux *router) {
	mux.HandleFunc("GET /v1/hosts", s.hosts)
	mux.HandleFunc("POST /v1/hosts/{id}/drain", s.drain)
	mux.HandleFunc("POST /v1/sprites/{name}/move", s.move)
	mux.HandleFunc("POST /v1/sprites/{name}/claim", s.claim)
}

// routeCluster sends a request for a sprite that another host has to that
// host (cluster mode).
func (s *Server) routeCluster(next http.Handler) http.Handler {
	if s.Fleet == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, rest := spriteOf(r.URL.Path)
		if name == "" || rest == "move" || rest == "claim" {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodGet && rest == "" {
			// A look at a sprite at rest does not take it anywhere.
			if _, err := s.Sprites.Get(name); err != nil {
				rec, gen, ok, err := s.Fleet.Peek(r.Context(), name)
				if err != nil {
					writeError(w, err)
					return
				}
				if ok {
					out := apiSprite(rec)
					out.Generation = gen
					writeJSON(w, 200, out)
					return
				}
			}
		}
		if !s.elsewhere(w, r, name) {
			next.ServeHTTP(w, r)
		}
	})
}

// elsewhere serves r on the host that has sprite name when that is not
// this one; true when r was answered (sent there, or an error).
func (s *Server) elsewhere(w http.ResponseWriter, r *http.Request, name string) bool {
	h, err := s.Fleet.Route(r, name, callerJSON(r))
	if err != nil {
		writeError(w, err)
		return true
	}
	if h != nil {
		h.ServeHTTP(w, r)
		return true
	}
	return false
}

// spriteOf returns the sprite a /v1/sprites/{name}[/rest] path names.
func spriteOf(p string) (name, rest string) {
	after, ok := strings.CutPrefix(p, "/v1/sprites/")
	if !ok {
		return "", ""
	}
	seg, rest, _ := strings.Cut(after, "/")
	name, err := url.PathUnescape(seg)
	if err != nil {
		return "", ""
	}
	return name, rest
}

// callerJSON is the credential a request came with, as a forwarded
// request carries it (nil: the unix socket).
func callerJSON(r *http.Request) []byte {
	t, ok := caller(r)
	if !ok {
		return nil
	}
	b, _ := json.Marshal(token.Token{Name: t.Name, Kind: t.Kind, Sprites: t.Sprites})
	return b
}

// forwarded returns the token a request forwarded by another host of the
// cluster was sent for; ok is false for any other request.
func (s *Server) forwarded(r *http.Request) (token.Token, bool) {
	if s.Fleet == nil {
		return token.Token{}, false
	}
	c, ok := s.Fleet.Trusted(r)
	if !ok {
		return token.Token{}, false
	}
	t := token.Token{Name: "cluster", Kind: token.Wisp}
	if c != nil {
		if err := json.Unmarshal(c, &t); err != nil {
			return token.Token{}, false
		}
	}
	return t, true
}

// placed fills in where a sprite of this host is, in cluster mode.
func (s *Server) placed(ctx context.Context, sp *api.Sprite) {
	if s.Fleet != nil {
		sp.Host, sp.Generation = s.Fleet.Placement(ctx, sp.Name)
	}
}

func (s *Server) needFleet(w http.ResponseWriter) bool {
	if s.Fleet == nil {
		writeError(w, errdefs.WithHint(fmt.Errorf("this daemon is not in a cluster: %w", errdefs.ErrInvalid),
			"start wispd with --cluster etcd=URL --s3 URL --s3-bucket NAME (see the README)"))
		return false
	}
	return true
}

func (s *Server) hosts(w http.ResponseWriter, r *http.Request) {
	if !s.needFleet(w) {
		return
	}
	hs, err := s.Fleet.Hosts(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, hs)
}

func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	if !s.needFleet(w) || !s.unscoped(w, r) {
		return
	}
	id := r.PathValue("id")
	moved, err := s.Fleet.Drain(r.Context(), id, callerJSON(r))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, api.DrainResult{Host: id, Moved: moved})
}

func (s *Server) move(w http.ResponseWriter, r *http.Request) {
	if !s.needFleet(w) {
		return
	}
	var req api.MoveRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	name := r.PathValue("name")
	host, _ := s.Fleet.Placement(r.Context(), name)
	if host != "" && host != s.Fleet.ID() && s.elsewhere(w, r, name) {
		return // its host moves it
	}
	if err := s.Fleet.Move(r.Context(), name, req.To, callerJSON(r)); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, api.Sprite{Name: name, Host: req.To})
}

func (s *Server) claim(w http.ResponseWriter, r *http.Request) {
	if !s.needFleet(w) {
		return
	}
	if _, ok := s.forwarded(r); !ok {
		if _, remote := caller(r); remote {
			writeAPIError(w, http.StatusForbidden, api.CodePermission, "claim is for the hosts of the cluster (use move)", "")
			return
		}
	}
	name := r.PathValue("name")
	if err := s.Fleet.Claim(r.Context(), name); err != nil {
		writeError(w, err)
		return
	}
	sp, err := s.Sprites.Get(name)
	if err != nil {
		writeError(w, err)
		return
	}
	out := apiSprite(sp)
	s.placed(r.Context(), &out)
	writeJSON(w, 200, out)
}

// unscoped refuses a request whose token is scoped to some sprites.
func (s *Server) unscoped(w http.ResponseWriter, r *http.Request) bool {
	if t, ok := caller(r); ok && t.Scoped() {
		writeAPIError(w, http.StatusForbidden, api.CodePermission, fmt.Sprintf("token %q is scoped to sprites: it cannot drain hosts", t.Name), "")
		return false
	}
	return true
}
