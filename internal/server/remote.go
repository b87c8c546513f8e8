package server

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/token"
)

// The API over TCP (wispd --listen) is the unix socket's API behind a
// bearer token: RemoteHandler checks `Authorization: Bearer TOKEN`
// against the token store and the token's scope, then hands the request
// to the same routes. Token management stays on the unix socket, where
// file permissions say who is root.

// callerKey carries the token a TCP request came with.
type callerKey struct{}

// caller returns the token of a request that came over TCP; ok is false
// for the unix socket.
func caller(r *http.Request) (token.Token, bool) {
	t, ok := r.Context().Value(callerKey{}).(token.Token)
	return t, ok
}

// visible keeps of items those the request's token may see: all of them
// over the unix socket or with an unscoped token.
func visible[T any](r *http.Request, items []T, name func(T) string) []T {
	t, ok := caller(r)
	if !ok || !t.Scoped() {
		return items
	}
	out := make([]T, 0, len(items))
	for _, it := range items {
		if t.Allows(name(it)) {
			out = append(out, it)
		}
	}
	return out
}

// IsE2B reports whether a request is for the E2B-compatible API rather
// than wisp's: E2B's control plane (/sandboxes, /v2/sandboxes,
// /templates) or a sandbox's envd (the E2b-Sandbox-Id header E2B's SDKs
// send). It is the default of Server.E2BMatch.
func IsE2B(r *http.Request) bool {
	if r.Header.Get("E2b-Sandbox-Id") != "" {
		return true
	}
	p := r.URL.Path
	for _, pre := range []string{"/sandboxes", "/v2/sandboxes", "/templates"} {
		if p == pre || strings.HasPrefix(p, pre+"/") {
			return true
		}
	}
	return false
}

// RemoteHTTPServer returns the http.Server of the API over TCP, bounded
// as the unix socket's is: header size and time, idle connections; each
// route bounds its body (JSON under maxBody, secrets under 64 KiB), and
// file and tar uploads are as large as the sprite's disk takes.
func (s *Server) RemoteHTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.RemoteHandler(),
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}

// RemoteHandler returns the API as TCP serves it: E2B requests go to
// s.E2B (which checks its own keys: token.Store.Lookup); every other
// request needs a wisp token, and a scoped one reaches only its sprites.
func (s *Server) RemoteHandler() http.Handler {
	routes := s.Handler()
	match := s.E2BMatch
	if match == nil {
		match = IsE2B
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.E2B != nil && match(r) {
			s.E2B.ServeHTTP(w, r)
			return
		}
		t, ok := s.forwarded(r)
		if !ok {
			t, ok = s.bearer(r)
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wisp"`)
			writeAPIError(w, http.StatusUnauthorized, api.CodeUnauthorized,
				"missing, unknown or revoked token: every request over TCP needs `Authorization: Bearer TOKEN`",
				"make one on the daemon's host with `wisp token create --name NAME`, and pass it with --token or WISP_TOKEN")
			return
		}
		if code, msg := authorize(t, r); code != 0 {
			c := api.CodePermission
			if code == http.StatusNotFound {
				c = api.CodeNotFound
			}
			writeAPIError(w, code, c, msg, "")
			return
		}
		s.Log.Debug("remote request", "token", t.Name, "method", r.Method, "path", r.URL.Path)
		// A revoke ends what the token has open: its requests' contexts
		// and the connections they took over (exec, console, proxies).
		ctx, cancel := context.WithCancel(context.WithValue(r.Context(), callerKey{}, t))
		defer cancel()
		lr := &liveRequest{cancel: cancel}
		s.live.add(t.Name, lr)
		defer s.live.remove(t.Name, lr)
		routes.ServeHTTP(&revocableWriter{ResponseWriter: w, lr: lr}, r.WithContext(ctx))
	})
}

// bearer returns the wisp token the request carries. E2B keys do not
// open wisp's API (nor wisp tokens E2B's): each kind opens its own.
func (s *Server) bearer(r *http.Request) (token.Token, bool) {
	if s.Tokens == nil {
		return token.Token{}, false
	}
	scheme, secret, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return token.Token{}, false
	}
	t, ok := s.Tokens.Lookup(strings.TrimSpace(secret))
	if !ok || t.Kind != token.Wisp {
		return token.Token{}, false
	}
	return t, true
}

// authorize decides what token t may do with r: 0 to go on, or a status
// and why not. Token management is for the unix socket. A scoped token
// reaches its own sprites (any other is "not found", so a token does not
// learn which sprites exist), lists, and the version; creating sprites
// (forks too), images and the host report are forbidden to it.
func authorize(t token.Token, r *http.Request) (int, string) {
	p := r.URL.EscapedPath()
	if p != path.Clean(p) {
		// The routes would redirect to the clean path; a scope check on
		// an unclean one could read another name than the route does.
		return http.StatusNotFound, fmt.Sprintf("path %q is not clean", p)
	}
	if p == "/v1/tokens" || strings.HasPrefix(p, "/v1/tokens/") {
		return http.StatusForbidden, "tokens are managed only over the unix socket (as root on the daemon's host)"
	}
	if strings.HasPrefix(p, "/v1/bench/") {
		// Measurements do root-level work on the daemon's host.
		return http.StatusForbidden, "benchmarks of the daemon's host run only over the unix socket"
	}
	if !t.Scoped() {
		return 0, ""
	}
	seg := strings.Split(strings.TrimPrefix(p, "/"), "/")
	switch {
	case p == "/v1/version" || p == "/v1/sprites" && r.Method == http.MethodGet:
		return 0, ""
	case len(seg) >= 3 && seg[0] == "v1" && seg[1] == "sprites":
		name, err := url.PathUnescape(seg[2])
		if err != nil || !t.Allows(name) {
			return http.StatusNotFound, fmt.Sprintf("sprite %q: %s", name, errdefs.ErrNotFound)
		}
		if len(seg) == 4 && seg[3] == "fork" {
			return http.StatusForbidden, fmt.Sprintf("token %q is scoped to sprites %s: it cannot make new ones", t.Name, strings.Join(t.Sprites, ", "))
		}
		return 0, ""
	}
	return http.StatusForbidden, fmt.Sprintf("token %q is scoped to sprites %s: it may use only those", t.Name, strings.Join(t.Sprites, ", "))
}

func writeAPIError(w http.ResponseWriter, code int, name, msg, hint string) {
	writeJSON(w, code, api.ErrorBody{Error: api.Error{Code: name, Message: msg, Hint: hint}})
}

// Token management: the unix socket only.

func (s *Server) tokenRoutes(mux *router) {
	mux.HandleFunc("POST /v1/tokens", s.createToken)
	mux.HandleFunc("GET /v1/tokens", s.listTokens)
	mux.HandleFunc("DELETE /v1/tokens/{name}", s.revokeToken)
}

// local refuses a token-management request that came over TCP. The TCP
// handler refuses them before they get here; this is the second lock.
func (s *Server) local(w http.ResponseWriter, r *http.Request) bool {
	if s.Tokens == nil {
		writeError(w, fmt.Errorf("this daemon has no token store: %w", errdefs.ErrUnavailable))
		return false
	}
	if _, remote := caller(r); remote {
		writeAPIError(w, http.StatusForbidden, api.CodePermission, "tokens are managed only over the unix socket", "")
		return false
	}
	return true
}

func apiToken(t token.Token) api.Token {
	return api.Token{Name: t.Name, Sprites: t.Sprites, Created: t.Created, Kind: string(t.Kind)}
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	if !s.local(w, r) {
		return
	}
	var req api.TokenCreateRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	kind := token.Wisp
	if req.E2B {
		kind = token.E2B
	}
	secret, t, err := s.Tokens.Create(req.Name, kind, req.Sprites)
	if err != nil {
		writeError(w, err)
		return
	}
	s.Log.Info("token created", "token", t.Name, "kind", t.Kind, "sprites", t.Sprites)
	out := apiToken(t)
	out.Token = secret
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	if !s.local(w, r) {
		return
	}
	out := []api.Token{}
	for _, t := range s.Tokens.List() {
		out = append(out, apiToken(t))
	}
	writeJSON(w, 200, out)
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	if !s.local(w, r) {
		return
	}
	if err := s.Tokens.Revoke(r.PathValue("name")); err != nil {
		writeError(w, err)
		return
	}
	n := s.live.end(r.PathValue("name"))
	s.Log.Info("token revoked", "token", r.PathValue("name"), "requests_ended", n)
	w.WriteHeader(http.StatusNoContent)
}

// liveTokens holds the requests in flight over TCP, by token name, so a
// revoke can end them.
type liveTokens struct {
	mu   sync.Mutex
	reqs map[string]map[*liveRequest]bool
}

func (l *liveTokens) add(name string, r *liveRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reqs == nil {
		l.reqs = map[string]map[*liveRequest]bool{}
	}
	if l.reqs[name] == nil {
		l.reqs[name] = map[*liveRequest]bool{}
	}
	l.reqs[name][r] = true
}

func (l *liveTokens) remove(name string, r *liveRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.reqs[name], r)
	if len(l.reqs[name]) == 0 {
		delete(l.reqs, name)
	}
}

// end ends every request of the token and returns how many there were.
func (l *liveTokens) end(name string) int {
	l.mu.Lock()
	reqs := l.reqs[name]
	delete(l.reqs, name)
	l.mu.Unlock()
	for r := range reqs {
		r.end()
	}
	return len(reqs)
}

// liveRequest is one request over TCP: its context, and the connection
// if its handler took it over.
type liveRequest struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	conn   net.Conn
	ended  bool
}

func (r *liveRequest) end() {
	r.cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended = true
	if r.conn != nil {
		r.conn.Close()
	}
}

func (r *liveRequest) hijacked(c net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		c.Close()
	}
	r.conn = c
}

// revocableWriter notes the connection a handler hijacks. It flushes and
// hijacks through to the server's writer (ResponseController and
// websocket.Accept both find them).
type revocableWriter struct {
	http.ResponseWriter
	lr *liveRequest
}

func (w *revocableWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *revocableWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

func (w *revocableWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.lr.hijacked(c)
	}
	return c, brw, err
}
