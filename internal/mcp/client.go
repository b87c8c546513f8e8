package mcp

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"path"
	"time"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/client"
)

// FromClient returns the Sprites of the wispd c talks to.
func FromClient(c *client.Client) Sprites { return clientSprites{c} }

type clientSprites struct{ c *client.Client }

var _ Sprites = clientSprites{}

// hinted gives a client error's hint to fail.
type hinted struct{ ce *client.Error }

func (h hinted) Hint() string  { return h.ce.Hint }
func (h hinted) Unwrap() error { return h.ce }
func (h hinted) Error() string { return h.ce.Error() }

func wrap(err error) error {
	var ce *client.Error
	if errors.As(err, &ce) {
		return hinted{ce}
	}
	return err
}

func sprite(s api.Sprite) Sprite {
	out := Sprite{Name: s.Name, State: s.State, Image: s.Image, Backend: s.Backend}
	for _, c := range s.Checkpoints {
		out.Checkpoints = append(out.Checkpoints, checkpoint(c))
	}
	return out
}

func checkpoint(c api.Checkpoint) Checkpoint {
	return Checkpoint{ID: c.ID, Comment: c.Comment, Created: c.CreatedAt}
}

func (s clientSprites) Create(ctx context.Context, name, image string) (Sprite, error) {
	sp, err := s.c.Create(ctx, api.CreateRequest{Name: name, Image: image})
	return sprite(sp), wrap(err)
}

func (s clientSprites) List(ctx context.Context) ([]Sprite, error) {
	l, err := s.c.List(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	out := make([]Sprite, 0, len(l))
	for _, sp := range l {
		out = append(out, sprite(sp))
	}
	return out, nil
}

func (s clientSprites) Exec(ctx context.Context, name string, argv []string, dir string, stdout, stderr io.Writer) (int, error) {
	cmd := s.c.Sprite(name).CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, stdout, stderr
	err := cmd.Run()
	var ee *client.ExitError
	if errors.As(err, &ee) {
		return ee.Code, nil
	}
	return cmd.ExitCode(), wrap(err)
}

func (s clientSprites) ReadFile(ctx context.Context, name, p string, max int64) ([]byte, int64, error) {
	sp := s.c.Sprite(name)
	fi, err := sp.Stat(ctx, p)
	if err != nil {
		return nil, 0, wrap(err)
	}
	if fi.IsDir {
		return nil, 0, errors.New(p + " is a directory; list it with sprite_exec (ls -la)")
	}
	rc, err := sp.Open(ctx, p)
	if err != nil {
		return nil, 0, wrap(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, max))
	return b, max64(fi.Size, int64(len(b))), wrap(err)
}

func max64(a, b int64) int64 { return max(a, b) }

func (s clientSprites) WriteFile(ctx context.Context, name, p string, data []byte, mode fs.FileMode) error {
	sp := s.c.Sprite(name)
	if err := sp.Mkdir(ctx, path.Dir(p), 0o755, true); err != nil {
		return wrap(err)
	}
	return wrap(sp.WriteFile(ctx, p, data, mode))
}

func (s clientSprites) Checkpoint(ctx context.Context, name, comment string) (Checkpoint, error) {
	c, err := s.c.Sprite(name).Checkpoint(ctx, api.CheckpointRequest{Comment: comment})
	return checkpoint(c), wrap(err)
}

func (s clientSprites) Restore(ctx context.Context, name, id string) (Sprite, error) {
	sp, err := s.c.Sprite(name).Restore(ctx, id)
	return sprite(sp), wrap(err)
}

func (s clientSprites) Fork(ctx context.Context, name, newName, from string) (Sprite, error) {
	sp, err := s.c.Sprite(name).Fork(ctx, newName, from)
	return sprite(sp), wrap(err)
}

func (s clientSprites) URL(ctx context.Context, name string, port int, ttl time.Duration) (URL, error) {
	u, err := s.c.Sprite(name).URL(ctx, api.URLRequest{Port: port, Signed: true, TTLSeconds: int(ttl.Seconds())})
	return URL{URL: u.URL, Port: u.Port, Expires: u.ExpiresAt}, wrap(err)
}

func (s clientSprites) Destroy(ctx context.Context, name string) error {
	return wrap(s.c.Sprite(name).Destroy(ctx))
}
