package client

import (
	"context"

	"github.com/wisp-sh/wisp/api"
)

// Tokens open the API over TCP (wispd --listen). They are managed only
// over the unix socket: over TCP these calls fail with a permission error.

// CreateToken makes a token; the answer's Token is its secret, shown
// this once (the daemon keeps only its hash).
func (c *Client) CreateToken(ctx context.Context, req api.TokenCreateRequest) (api.Token, error) {
	var out api.Token
	return out, c.do(ctx, "POST", "/v1/tokens", req, &out)
}

// Tokens lists the tokens, without their secrets.
func (c *Client) Tokens(ctx context.Context) ([]api.Token, error) {
	var out []api.Token
	return out, c.do(ctx, "GET", "/v1/tokens", nil, &out)
}

// RevokeToken deletes a token: it opens nothing from the next request on.
func (c *Client) RevokeToken(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/tokens/"+esc(name), nil, nil)
}
