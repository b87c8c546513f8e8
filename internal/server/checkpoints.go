package server

import (
	"net/http"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/sprite"
)

func (s *Server) update(w http.ResponseWriter, r *http.Request) {
	var req api.UpdateRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	name := r.PathValue("name")
	sp, err := s.Sprites.Get(name)
	if err == nil && req.Size != nil {
		sz := sprite.Size{CPUs: req.Size.CPUs, MemoryMiB: req.Size.MemoryMiB, DiskGiB: req.Size.DiskGiB}
		sp, _, err = s.Sprites.Resize(r.Context(), name, sz)
	}
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
	writeJSON(w, 200, apiSprite(sp))
}

func (s *Server) sleep(w http.ResponseWriter, r *http.Request) {
	sp, err := s.Sprites.Sleep(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, apiSprite(sp))
}

func (s *Server) createCheckpoint(w http.ResponseWriter, r *http.Request) {
	var req api.CheckpointRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	ck, err := s.Sprites.CreateCheckpoint(r.Context(), r.PathValue("name"), req.Comment, req.Memory)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, apiCheckpoint(ck))
}

func (s *Server) listCheckpoints(w http.ResponseWriter, r *http.Request) {
	list, err := s.Sprites.Checkpoints(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	out := []api.Checkpoint{}
	for _, c := range list {
		out = append(out, apiCheckpoint(c))
	}
	writeJSON(w, 200, out)
}

func (s *Server) getCheckpoint(w http.ResponseWriter, r *http.Request) {
	ck, err := s.Sprites.GetCheckpoint(r.PathValue("name"), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, apiCheckpoint(ck))
}

func (s *Server) deleteCheckpoint(w http.ResponseWriter, r *http.Request) {
	if err := s.Sprites.DeleteCheckpoint(r.Context(), r.PathValue("name"), r.PathValue("id")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) restore(w http.ResponseWriter, r *http.Request) {
	var req api.RestoreRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	sp, err := s.Sprites.Restore(r.Context(), r.PathValue("name"), req.ID)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, apiSprite(sp))
}

func (s *Server) fork(w http.ResponseWriter, r *http.Request) {
	var req api.ForkRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	sp, err := s.Sprites.Fork(r.Context(), r.PathValue("name"), req.From, req.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, apiSprite(sp))
}
