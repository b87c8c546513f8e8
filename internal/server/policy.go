package server

import (
	"net/http"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/network"
)

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request) {
	sp, err := s.Sprites.Get(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, policyView(sp.Policy, sp.Address))
}

func (s *Server) setPolicy(w http.ResponseWriter, r *http.Request) {
	var p api.Policy
	if err := decode(r, &p); err != nil {
		writeError(w, err)
		return
	}
	sp, err := s.Sprites.SetPolicy(r.Context(), r.PathValue("name"), netPolicy(p))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, policyView(sp.Policy, sp.Address))
}

// policyView is a sprite's egress policy as the API shows it.
func policyView(p network.Policy, addr string) api.Policy {
	p.Normalize()
	return apiPolicy(p, addr)
}
