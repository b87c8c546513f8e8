package server

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/meter"
	"github.com/wisp-sh/wisp/internal/sprite"
)

func (s *Server) usageRoutes(mux *router) {
	mux.HandleFunc("GET /v1/usage", s.usage)
	mux.HandleFunc("GET /v1/top", s.top)
	mux.HandleFunc("GET /v1/sprites/{name}/cap", s.getCap)
	mux.HandleFunc("PUT /v1/sprites/{name}/cap", s.setCap)
}

func (s *Server) meter(w http.ResponseWriter) *meter.Meter {
	if s.Meter == nil {
		writeError(w, fmt.Errorf("this daemon meters nothing: %w", errdefs.ErrUnavailable))
	}
	return s.Meter
}

// usage: ?sprite=NAME (repeatable), since=DURATION|RFC3339 (default 24h),
// by=hour|day.
func (s *Server) usage(w http.ResponseWriter, r *http.Request) {
	m := s.meter(w)
	if m == nil {
		return
	}
	q := r.URL.Query()
	since, err := parseSince(q.Get("since"), time.Now())
	if err != nil {
		writeError(w, err)
		return
	}
	for _, n := range q["sprite"] {
		if rec, err := s.Sprites.Record(n); err == nil {
			m.Know(rec.ID, rec.Name)
		}
	}
	rep, err := m.Usage(meter.Query{Names: q["sprite"], Since: since, By: q.Get("by")})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// parseSince reads "24h", "7d" (days), "all", or an RFC 3339 time.
func parseSince(v string, now time.Time) (time.Time, error) {
	switch {
	case v == "":
		return now.Add(-24 * time.Hour), nil
	case v == "all":
		return time.Time{}, nil
	case strings.HasSuffix(v, "d"):
		var n int
		if _, err := fmt.Sscanf(v, "%dd", &n); err == nil && n > 0 && fmt.Sprintf("%dd", n) == v {
			return now.AddDate(0, 0, -n), nil
		}
	default:
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return now.Add(-d), nil
		}
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errdefs.WithHint(fmt.Errorf("since %q: %w", v, errdefs.ErrInvalid), "a duration (24h, 30m), days (7d), all, or an RFC 3339 time")
}

func (s *Server) top(w http.ResponseWriter, r *http.Request) {
	m := s.meter(w)
	if m == nil {
		return
	}
	live := m.Live()
	for i := range live {
		if rec, err := s.Sprites.Record(live[i].Sprite); err == nil {
			live[i].Capped = m.Capped(rec.ID)
		}
	}
	writeJSON(w, http.StatusOK, live)
}

// capped runs fn with the meter and the named sprite's record, or
// answers the error.
func (s *Server) capped(w http.ResponseWriter, r *http.Request, fn func(*meter.Meter, sprite.Sprite)) {
	m := s.meter(w)
	if m == nil {
		return
	}
	rec, err := s.Sprites.Record(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	fn(m, rec)
}

func (s *Server) getCap(w http.ResponseWriter, r *http.Request) {
	s.capped(w, r, func(m *meter.Meter, rec sprite.Sprite) {
		writeJSON(w, http.StatusOK, api.CapStatus{Cap: m.Cap(rec.ID), Capped: m.Capped(rec.ID)})
	})
}

func (s *Server) setCap(w http.ResponseWriter, r *http.Request) {
	s.capped(w, r, func(m *meter.Meter, rec sprite.Sprite) {
		var c api.Cap
		if err := decode(r, &c); err != nil {
			writeError(w, err)
			return
		}
		if err := m.SetCap(rec.ID, rec.Name, c); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, api.CapStatus{Cap: m.Cap(rec.ID), Capped: m.Capped(rec.ID)})
	})
}
