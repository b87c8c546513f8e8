package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/image"
)

func (s *Server) imageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/images", s.images)
	mux.HandleFunc("POST /v1/images/{name}/build", s.buildImage)
}

func (s *Server) images(w http.ResponseWriter, r *http.Request) {
	list, err := s.Images.List()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, list)
}

// BuildEvent is one line of the NDJSON body of an image build: progress,
// then the built image or an error.
type BuildEvent struct {
	Progress *image.Progress `json:"progress,omitempty"`
	Image    *image.Info     `json:"image,omitempty"`
	Error    *APIError       `json:"error,omitempty"`
}

// buildImage builds an image, streaming progress as NDJSON. The build
// runs under the daemon, not the request: a client that goes away does not
// leave a half-built image (builds are atomic anyway).
func (s *Server) buildImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !isImage(name) {
		writeError(w, errdefs.WithHint(fmt.Errorf("unknown image %q: %w", name, errdefs.ErrInvalid), "images: "+strings.Join(image.Names(), ", ")))
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(200)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	var mu sync.Mutex // the build reports from its own goroutines
	send := func(ev BuildEvent) {
		mu.Lock()
		defer mu.Unlock()
		if enc.Encode(ev) == nil {
			rc.Flush()
		}
	}
	info, err := s.Images.Build(context.WithoutCancel(r.Context()), name, func(p image.Progress) { send(BuildEvent{Progress: &p}) })
	if err != nil {
		_, cname := status(err)
		send(BuildEvent{Error: &APIError{Code: cname, Message: err.Error(), Hint: errdefs.Hint(err)}})
		return
	}
	send(BuildEvent{Image: &info})
}

func isImage(name string) bool {
	for _, n := range image.Names() {
		if n == name {
			return true
		}
	}
	return false
}
