package client

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
)

// SetSecret sets secret key of sprite name: every exec in the sprite gets
// it in its environment. The value travels as the raw body and is never
// shown by the daemon.
func (c *Client) SetSecret(ctx context.Context, name, key string, value []byte) error {
	req, err := http.NewRequestWithContext(ctx, "PUT", "http://wispd/v1/sprites/"+url.PathEscape(name)+"/secrets/"+url.PathEscape(key), bytes.NewReader(value))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		return unwrapURL(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	return nil
}

// Secrets lists the names of sprite name's secrets.
func (c *Client) Secrets(ctx context.Context, name string) ([]string, error) {
	var keys []string
	return keys, c.do(ctx, "GET", "/v1/sprites/"+url.PathEscape(name)+"/secrets", nil, &keys)
}

// RemoveSecret removes secret key of sprite name.
func (c *Client) RemoveSecret(ctx context.Context, name, key string) error {
	return c.do(ctx, "DELETE", "/v1/sprites/"+url.PathEscape(name)+"/secrets/"+url.PathEscape(key), nil, nil)
}
