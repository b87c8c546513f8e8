package client

import (
	"context"
	"net/url"

	"github.com/wisp-sh/wisp/api"
)

// UsageQuery selects usage: of the sprites named (all when empty), since
// ("24h", "7d", "all" or an RFC 3339 time; "" the last 24 hours), and a
// series by "hour" or "day" ("" none).
type UsageQuery struct {
	Sprites []string
	Since   string
	By      string
}

// Usage returns what sprites used and what it cost.
func (c *Client) Usage(ctx context.Context, q UsageQuery) (api.UsageReport, error) {
	v := url.Values{}
	for _, s := range q.Sprites {
		v.Add("sprite", s)
	}
	if q.Since != "" {
		v.Set("since", q.Since)
	}
	if q.By != "" {
		v.Set("by", q.By)
	}
	var rep api.UsageReport
	path := "/v1/usage"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	err := c.do(ctx, "GET", path, nil, &rep)
	return rep, err
}

// Top returns each sprite's use at the meter's last sample.
func (c *Client) Top(ctx context.Context) ([]api.Live, error) {
	var out []api.Live
	err := c.do(ctx, "GET", "/v1/top", nil, &out)
	return out, err
}

// Cap returns the sprite's cap and whether it is held at it.
func (s *Sprite) Cap(ctx context.Context) (api.CapStatus, error) {
	var out api.CapStatus
	err := s.c.do(ctx, "GET", s.path("/cap"), nil, &out)
	return out, err
}

// SetCap sets (replaces) the sprite's cap; the zero Cap removes it.
func (s *Sprite) SetCap(ctx context.Context, c api.Cap) (api.CapStatus, error) {
	var out api.CapStatus
	err := s.c.do(ctx, "PUT", s.path("/cap"), c, &out)
	return out, err
}
