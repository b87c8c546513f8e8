package server

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// metricsRoutes serves Prometheus' text format at /metrics.
func (s *Server) metricsRoutes(mux *router) {
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("this daemon keeps no metrics: %w", errdefs.ErrUnavailable))
	})
	if s.Metrics != nil {
		h = promhttp.HandlerFor(s.Metrics.Registry, promhttp.HandlerOpts{MaxRequestsInFlight: 4})
	}
	mux.HandleFunc("GET /metrics", h.ServeHTTP)
}

// countRequests counts every request by the route that served it.
func (s *Server) countRequests(h http.Handler) http.Handler {
	if s.Metrics == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		route := r.Pattern // set by the mux on r; "" when nothing matched
		if route == "" {
			route = "unmatched"
		}
		code := sw.code
		if sw.hijacked {
			code = http.StatusSwitchingProtocols
		} else if code == 0 {
			code = http.StatusOK
		}
		s.Metrics.Request(route, r.Method, strconv.Itoa(code))
	})
}

// statusWriter remembers the status a handler wrote; streams and upgrades
// pass through it.
type statusWriter struct {
	http.ResponseWriter
	code     int
	hijacked bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be hijacked")
	}
	w.hijacked = true
	return hj.Hijack()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
