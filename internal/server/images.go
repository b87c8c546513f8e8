package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/image"
)

func (s *Server) imageRoutes(mux *router) {
	mux.HandleFunc("GET /v1/images", s.images)
	mux.HandleFunc("POST /v1/images/{name}/build", s.buildImage)
	mux.HandleFunc("GET /v1/images/{name}", s.image)
	mux.HandleFunc("POST /v1/images/{name}/save", s.saveImage)
	mux.HandleFunc("DELETE /v1/images/{name}", s.removeImage)
}

func (s *Server) image(w http.ResponseWriter, r *http.Request) {
	info, err := s.Images.Info(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, apiImage(info))
}

// saveImage turns a sprite's disk, as it is now, into an image (a reflink).
func (s *Server) saveImage(w http.ResponseWriter, r *http.Request) {
	var req api.SaveImageRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := image.CheckOwnName(r.PathValue("name")); err != nil {
		writeError(w, err)
		return
	}
	sp, err := s.Sprites.Get(req.Sprite)
	if err != nil {
		writeError(w, err)
		return
	}
	recipe := image.Recipe{From: sp.Image, Sprite: sp.Name}
	if req.Recipe != nil {
		recipe = *imageRecipe(req.Recipe)
	}
	ctx := context.WithoutCancel(r.Context())
	info, err := s.Images.Save(r.PathValue("name"), recipe, func(dst string) error {
		_, err := s.Sprites.SaveDisk(ctx, req.Sprite, dst)
		return err
	})
	s.Sprites.ForgetImage(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, apiImage(info))
}

func (s *Server) removeImage(w http.ResponseWriter, r *http.Request) {
	err := s.Images.Remove(r.PathValue("name"))
	s.Sprites.ForgetImage(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) images(w http.ResponseWriter, r *http.Request) {
	list, err := s.Images.List()
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]api.Image, 0, len(list))
	for _, i := range list {
		out = append(out, apiImage(i))
	}
	writeJSON(w, 200, out)
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
	send := func(ev api.BuildEvent) {
		mu.Lock()
		defer mu.Unlock()
		if enc.Encode(ev) == nil {
			rc.Flush()
		}
	}
	info, err := s.Images.Build(context.WithoutCancel(r.Context()), name, func(p image.Progress) { ap := apiProgress(p); send(api.BuildEvent{Progress: &ap}) })
	s.Sprites.ForgetImage(name)
	if err != nil {
		e := apiError(err)
		send(api.BuildEvent{Error: &e})
		return
	}
	ai := apiImage(info)
	send(api.BuildEvent{Image: &ai})
}

func isImage(name string) bool {
	for _, n := range image.Names() {
		if n == name {
			return true
		}
	}
	return false
}
