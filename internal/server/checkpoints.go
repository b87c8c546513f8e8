package server

import (
	"net/http"

	"github.com/wisp-sh/wisp/internal/sprite"
)

// UpdateRequest is the body of PATCH /v1/sprites/{name}.
type UpdateRequest struct {
	IdleSeconds *int  `json:"idle_seconds,omitempty"` // 0 the default, -1 never
	URLPublic   *bool `json:"url_public,omitempty"`   // the URL answers anyone (true) or only credentials
}

func (s *Server) update(w http.ResponseWriter, r *http.Request) {
	var req UpdateRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	name := r.PathValue("name")
	sp, err := s.Sprites.Get(name)
	if err == nil && req.IdleSeconds != nil {
		sp, err = s.Sprites.SetIdle(name, *req.IdleSeconds)
	}
	if err == nil && req.URLPublic != nil {
		sp, err = s.Sprites.SetURLPublic(name, *req.URLPublic)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, sp)
}

func (s *Server) sleep(w http.ResponseWriter, r *http.Request) {
	sp, err := s.Sprites.Sleep(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, sp)
}

// CheckpointRequest is the body of POST .../checkpoints.
type CheckpointRequest struct {
	Comment string `json:"comment,omitempty"`
	Memory  bool   `json:"memory,omitempty"`
}

func (s *Server) createCheckpoint(w http.ResponseWriter, r *http.Request) {
	var req CheckpointRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	ck, err := s.Sprites.CreateCheckpoint(r.Context(), r.PathValue("name"), req.Comment, req.Memory)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, ck)
}

func (s *Server) listCheckpoints(w http.ResponseWriter, r *http.Request) {
	list, err := s.Sprites.Checkpoints(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	if list == nil {
		list = []sprite.Checkpoint{}
	}
	writeJSON(w, 200, list)
}

func (s *Server) getCheckpoint(w http.ResponseWriter, r *http.Request) {
	ck, err := s.Sprites.GetCheckpoint(r.PathValue("name"), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, ck)
}

func (s *Server) deleteCheckpoint(w http.ResponseWriter, r *http.Request) {
	if err := s.Sprites.DeleteCheckpoint(r.Context(), r.PathValue("name"), r.PathValue("id")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// RestoreRequest is the body of POST .../restore.
type RestoreRequest struct {
	ID string `json:"id"`
}

func (s *Server) restore(w http.ResponseWriter, r *http.Request) {
	var req RestoreRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	sp, err := s.Sprites.Restore(r.Context(), r.PathValue("name"), req.ID)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, sp)
}

// ForkRequest is the body of POST .../fork.
type ForkRequest struct {
	Name string `json:"name"`           // the new sprite
	From string `json:"from,omitempty"` // a checkpoint id; empty: the current state
}

func (s *Server) fork(w http.ResponseWriter, r *http.Request) {
	var req ForkRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	sp, err := s.Sprites.Fork(r.Context(), r.PathValue("name"), req.From, req.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, sp)
}
