package client

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/wisp-sh/wisp/api"
)

// Sprite is a handle on one sprite by name; it holds no state of its own
// (Info asks the daemon).
type Sprite struct {
	c    *Client
	name string
}

// Sprite returns a handle on sprite name (which need not exist yet).
func (c *Client) Sprite(name string) *Sprite { return &Sprite{c: c, name: name} }

// Name is the sprite's name.
func (s *Sprite) Name() string { return s.name }

func (s *Sprite) path(sub string) string { return "/v1/sprites/" + esc(s.name) + sub }

func (s *Sprite) call(ctx context.Context, method, sub string, body any) (api.Sprite, error) {
	var out api.Sprite
	return out, s.c.do(ctx, method, s.path(sub), body, &out)
}

// Info describes the sprite.
func (s *Sprite) Info(ctx context.Context) (api.Sprite, error) { return s.call(ctx, "GET", "", nil) }

// Destroy stops the sprite and removes it with its disk and checkpoints.
func (s *Sprite) Destroy(ctx context.Context) error {
	return s.c.do(ctx, "DELETE", s.path(""), nil, nil)
}

// Start boots a stopped sprite (or wakes a sleeping one).
func (s *Sprite) Start(ctx context.Context) (api.Sprite, error) {
	return s.call(ctx, "POST", "/start", nil)
}

// Stop shuts the sprite down; its disk keeps everything.
func (s *Sprite) Stop(ctx context.Context) (api.Sprite, error) {
	return s.call(ctx, "POST", "/stop", nil)
}

// Sleep saves the sprite's memory and stops its VM; the next use wakes
// it with its processes as they were.
func (s *Sprite) Sleep(ctx context.Context) (api.Sprite, error) {
	return s.call(ctx, "POST", "/sleep", nil)
}

// Update changes the settings req names.
func (s *Sprite) Update(ctx context.Context, req api.UpdateRequest) (api.Sprite, error) {
	return s.call(ctx, "PATCH", "", req)
}

// Logs returns the sprite's console log (the last tailBytes, if > 0).
func (s *Sprite) Logs(ctx context.Context, tailBytes int64) (io.ReadCloser, error) {
	return s.c.stream(ctx, "GET", s.path(fmt.Sprintf("/logs?tail_bytes=%d", tailBytes)), nil, "")
}

// Checkpoint saves the sprite's disk (and, with memory, its RAM).
func (s *Sprite) Checkpoint(ctx context.Context, req api.CheckpointRequest) (api.Checkpoint, error) {
	var out api.Checkpoint
	return out, s.c.do(ctx, "POST", s.path("/checkpoints"), req, &out)
}

// Checkpoints lists the sprite's checkpoints, oldest first.
func (s *Sprite) Checkpoints(ctx context.Context) ([]api.Checkpoint, error) {
	var out []api.Checkpoint
	return out, s.c.do(ctx, "GET", s.path("/checkpoints"), nil, &out)
}

// GetCheckpoint describes checkpoint id.
func (s *Sprite) GetCheckpoint(ctx context.Context, id string) (api.Checkpoint, error) {
	var out api.Checkpoint
	return out, s.c.do(ctx, "GET", s.path("/checkpoints/"+esc(id)), nil, &out)
}

// DeleteCheckpoint deletes checkpoint id.
func (s *Sprite) DeleteCheckpoint(ctx context.Context, id string) error {
	return s.c.do(ctx, "DELETE", s.path("/checkpoints/"+esc(id)), nil, nil)
}

// Restore puts the sprite back to checkpoint id.
func (s *Sprite) Restore(ctx context.Context, id string) (api.Sprite, error) {
	return s.call(ctx, "POST", "/restore", api.RestoreRequest{ID: id})
}

// Fork makes a new sprite, newName, from this one as it is now (from
// "") or from checkpoint from.
func (s *Sprite) Fork(ctx context.Context, newName, from string) (api.Sprite, error) {
	var out api.Sprite
	return out, s.c.do(ctx, "POST", s.path("/fork"), api.ForkRequest{Name: newName, From: from}, &out)
}

// Policy returns the sprite's egress policy.
func (s *Sprite) Policy(ctx context.Context) (api.Policy, error) {
	var out api.Policy
	return out, s.c.do(ctx, "GET", s.path("/policy"), nil, &out)
}

// SetPolicy replaces the sprite's egress policy; it applies at once.
func (s *Sprite) SetPolicy(ctx context.Context, p api.Policy) (api.Policy, error) {
	var out api.Policy
	p.Address = ""
	return out, s.c.do(ctx, "PUT", s.path("/policy"), p, &out)
}

// URL returns the sprite's URL on the daemon's front door.
func (s *Sprite) URL(ctx context.Context, req api.URLRequest) (api.URLInfo, error) {
	var out api.URLInfo
	return out, s.c.do(ctx, "POST", s.path("/url"), req, &out)
}

// Services lists the sprite's services and, when it runs, their state.
func (s *Sprite) Services(ctx context.Context) ([]api.ServiceStatus, error) {
	var out []api.ServiceStatus
	return out, s.c.do(ctx, "GET", s.path("/services"), nil, &out)
}

// AddService records a service and starts it (starting the sprite when
// it is stopped).
func (s *Sprite) AddService(ctx context.Context, sv api.Service) (api.ServiceStatus, error) {
	var out api.ServiceStatus
	return out, s.c.do(ctx, "POST", s.path("/services"), sv, &out)
}

// RemoveService stops a service and forgets it.
func (s *Sprite) RemoveService(ctx context.Context, name string) error {
	return s.c.do(ctx, "DELETE", s.path("/services/"+esc(name)), nil, nil)
}

// ServiceLogs returns the output the sprite kept of a service (its last
// 256 KiB).
func (s *Sprite) ServiceLogs(ctx context.Context, name string) (io.ReadCloser, error) {
	return s.c.stream(ctx, "GET", s.path("/services/"+esc(name)+"/logs"), nil, "")
}

// SetSecret sets a secret: every exec in the sprite gets it in its
// environment. The value travels as the raw body; the daemon never shows it.
func (s *Sprite) SetSecret(ctx context.Context, key string, value []byte) error {
	rc, err := s.c.stream(ctx, "PUT", s.path("/secrets/"+esc(key)), bytes.NewReader(value), "application/octet-stream")
	if err != nil {
		return err
	}
	return rc.Close()
}

// Secrets lists the names of the sprite's secrets.
func (s *Sprite) Secrets(ctx context.Context) ([]string, error) {
	var keys []string
	return keys, s.c.do(ctx, "GET", s.path("/secrets"), nil, &keys)
}

// RemoveSecret removes a secret.
func (s *Sprite) RemoveSecret(ctx context.Context, key string) error {
	return s.c.do(ctx, "DELETE", s.path("/secrets/"+esc(key)), nil, nil)
}
