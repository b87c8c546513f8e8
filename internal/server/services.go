package server

import (
	"bytes"
	"net/http"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/sprite"
)

func (s *Server) listServices(w http.ResponseWriter, r *http.Request) {
	list, err := s.Sprites.Services(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]api.ServiceStatus, 0, len(list))
	for _, st := range list {
		out = append(out, apiServiceStatus(st))
	}
	writeJSON(w, 200, out)
}

func (s *Server) addService(w http.ResponseWriter, r *http.Request) {
	var req api.Service
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	st, err := s.Sprites.AddService(r.Context(), r.PathValue("name"), sprite.Service{
		Name: req.Name, Cmd: req.Cmd, Dir: req.Dir, Env: req.Env, User: req.User, Port: req.Port,
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, apiServiceStatus(st))
}

func (s *Server) removeService(w http.ResponseWriter, r *http.Request) {
	if err := s.Sprites.RemoveService(r.Context(), r.PathValue("name"), r.PathValue("svc")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// serviceLogs answers the output the guest kept (at most 256 KiB, so it
// is gathered before the status is sent: an error still gets its code).
func (s *Server) serviceLogs(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	if err := s.Sprites.ServiceLogs(r.Context(), r.PathValue("name"), r.PathValue("svc"), &buf); err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write(buf.Bytes())
}
