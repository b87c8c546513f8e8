package client

import (
	"context"
	"net/url"

	"github.com/wisp-sh/wisp/api"
)

// Hosts lists the hosts of the daemon's cluster (an error of kind
// ErrInvalid when it is not in one).
func (c *Client) Hosts(ctx context.Context) ([]api.Host, error) {
	var out []api.Host
	err := c.do(ctx, "GET", "/v1/hosts", nil, &out)
	return out, err
}

// Drain marks host id draining and hands its sprites to the other hosts.
func (c *Client) Drain(ctx context.Context, id string) (api.DrainResult, error) {
	var out api.DrainResult
	err := c.do(ctx, "POST", "/v1/hosts/"+url.PathEscape(id)+"/drain", nil, &out)
	return out, err
}

// Move sends the sprite to host to (cluster mode): it sleeps here, its
// disk and memory are published, and host to takes it; the next use
// wakes it there.
func (s *Sprite) Move(ctx context.Context, to string) (api.Sprite, error) {
	return s.call(ctx, "POST", "/move", api.MoveRequest{To: to})
}
