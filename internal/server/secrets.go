package server

import (
	"fmt"
	"io"
	"net/http"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/sprite"
)

func (s *Server) secretRoutes(mux *router) {
	mux.HandleFunc("GET /v1/sprites/{name}/secrets", s.listSecrets)
	mux.HandleFunc("PUT /v1/sprites/{name}/secrets/{key}", s.setSecret)
	mux.HandleFunc("DELETE /v1/sprites/{name}/secrets/{key}", s.removeSecret)
}

// listSecrets answers the names of a sprite's secrets, never their values.
func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request) {
	keys, err := s.Sprites.SecretKeys(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, keys)
}

// setSecret takes the value as the raw request body (application/
// octet-stream): nothing about it is logged or echoed.
func (s *Server) setSecret(w http.ResponseWriter, r *http.Request) {
	value, err := io.ReadAll(io.LimitReader(r.Body, sprite.MaxSecretBytes+1))
	if err != nil {
		writeError(w, fmt.Errorf("read secret: %v: %w", err, errdefs.ErrInvalid))
		return
	}
	if err := s.Sprites.SetSecret(r.PathValue("name"), r.PathValue("key"), value); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) removeSecret(w http.ResponseWriter, r *http.Request) {
	if err := s.Sprites.RemoveSecret(r.PathValue("name"), r.PathValue("key")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
