package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/wisp-sh/wisp/api"
)

// Images lists the images.
func (c *Client) Images(ctx context.Context) ([]api.Image, error) {
	var out []api.Image
	return out, c.do(ctx, "GET", "/v1/images", nil, &out)
}

// Image describes one image.
func (c *Client) Image(ctx context.Context, name string) (api.Image, error) {
	var out api.Image
	return out, c.do(ctx, "GET", "/v1/images/"+esc(name), nil, &out)
}

// SaveImage makes image name from a sprite's disk as it is now (a
// reflink). req.Recipe, when set, records how the sprite was made.
func (c *Client) SaveImage(ctx context.Context, name string, req api.SaveImageRequest) (api.Image, error) {
	var out api.Image
	return out, c.do(ctx, "POST", "/v1/images/"+esc(name)+"/save", req, &out)
}

// RemoveImage removes an image of one's own.
func (c *Client) RemoveImage(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/images/"+esc(name), nil, nil)
}

// BuildImage builds an image, calling progress (which may be nil) as the
// build reports.
func (c *Client) BuildImage(ctx context.Context, name string, progress func(api.Progress)) (api.Image, error) {
	body, err := c.stream(ctx, "POST", "/v1/images/"+esc(name)+"/build", nil, "")
	if err != nil {
		return api.Image{}, err
	}
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev api.BuildEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return api.Image{}, fmt.Errorf("bad build event: %w", err)
		}
		switch {
		case ev.Error != nil:
			return api.Image{}, apiErr(0, *ev.Error)
		case ev.Image != nil:
			return *ev.Image, nil
		case progress != nil && ev.Progress != nil:
			progress(*ev.Progress)
		}
	}
	if err := sc.Err(); err != nil {
		return api.Image{}, err
	}
	return api.Image{}, errors.New("image build ended without a result (daemon stopped?)")
}
