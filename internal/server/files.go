package server

import (
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Files over plain HTTP (see api/files.go): a file's bytes and tar
// streams in and out, so a client needs no guest protocol to copy.
func (s *Server) fileRoutes(mux *router) {
	mux.HandleFunc("GET /v1/sprites/{name}/fs/file", s.readFile)
	mux.HandleFunc("PUT /v1/sprites/{name}/fs/file", s.writeFile)
	mux.HandleFunc("GET /v1/sprites/{name}/fs/tar", s.tarOut)
	mux.HandleFunc("PUT /v1/sprites/{name}/fs/tar", s.tarIn)
}

// sendBody copies rc to the response; a copy that fails part way aborts
// the connection, so the client sees a broken body, never a short one.
func (s *Server) sendBody(w http.ResponseWriter, rc io.ReadCloser) {
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		s.Log.Debug("file stream broke off", "err", err)
		panic(http.ErrAbortHandler)
	}
}

func (s *Server) readFile(w http.ResponseWriter, r *http.Request) {
	s.withAgent(w, r, func(ag *agent.Client) error {
		fi, rc, err := ag.ReadFile(r.Context(), r.URL.Query().Get("path"))
		if err != nil {
			return err
		}
		w.Header().Set("X-Wisp-File-Mode", strconv.FormatUint(uint64(fi.Mode), 8))
		s.sendBody(w, rc)
		return nil
	})
}

func (s *Server) tarOut(w http.ResponseWriter, r *http.Request) {
	s.withAgent(w, r, func(ag *agent.Client) error {
		rc, err := ag.TarOut(r.Context(), r.URL.Query().Get("path"))
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/x-tar")
		s.sendBody(w, rc)
		return nil
	})
}

func (s *Server) writeFile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var mode uint64
	if m := q.Get("mode"); m != "" {
		var err error
		if mode, err = strconv.ParseUint(m, 8, 32); err != nil || mode > 0o7777 {
			writeError(w, fmt.Errorf("mode %q: want octal permission bits such as 0644: %w", m, errdefs.ErrInvalid))
			return
		}
	}
	s.withAgent(w, r, func(ag *agent.Client) error {
		if err := ag.WriteFile(r.Context(), q.Get("path"), uint32(mode), q.Get("user"), r.Body); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

func (s *Server) tarIn(w http.ResponseWriter, r *http.Request) {
	s.withAgent(w, r, func(ag *agent.Client) error {
		q := r.URL.Query()
		if err := ag.TarIn(r.Context(), q.Get("path"), q.Get("user"), r.Body); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

// withAgent runs fn with the agent of the request's sprite, woken or
// started for the use and held active until fn returns; an error of
// either, before fn wrote anything, is the answer.
func (s *Server) withAgent(w http.ResponseWriter, r *http.Request, fn func(ag *agent.Client) error) {
	ag, release, err := s.Sprites.Agent(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	if err := fn(ag); err != nil {
		writeError(w, err)
	}
}
