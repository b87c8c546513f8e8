package client

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/url"

	"github.com/wisp-sh/wisp/api"
)

// Files of a sprite (paths are absolute, in the sprite). Reading or
// writing a file or a tar wakes or starts the sprite.

func pathQuery(p string) string { return "?path=" + url.QueryEscape(p) }

// Stat describes a file.
func (s *Sprite) Stat(ctx context.Context, path string) (api.FileInfo, error) {
	var out api.FileInfo
	return out, s.c.do(ctx, "GET", s.path("/fs/stat"+pathQuery(path)), nil, &out)
}

// ReadDir lists a directory; truncated says it holds more entries than
// the daemon lists.
func (s *Sprite) ReadDir(ctx context.Context, path string) (files []api.FileInfo, truncated bool, err error) {
	var out api.FileList
	err = s.c.do(ctx, "GET", s.path("/fs/list"+pathQuery(path)), nil, &out)
	return out.Files, out.Truncated, err
}

// Mkdir makes a directory (0: mode 0755), with its parents when
// recursive.
func (s *Sprite) Mkdir(ctx context.Context, path string, mode fs.FileMode, recursive bool) error {
	return s.c.do(ctx, "POST", s.path("/fs/mkdir"), api.MkdirRequest{Path: path, Mode: uint32(mode.Perm()), Recursive: recursive}, nil)
}

// Remove removes a file or an empty directory; with recursive, a tree.
func (s *Sprite) Remove(ctx context.Context, path string, recursive bool) error {
	q := pathQuery(path)
	if recursive {
		q += "&recursive=true"
	}
	return s.c.do(ctx, "DELETE", s.path("/fs"+q), nil, nil)
}

// Open returns a file's bytes. A read that fails part way returns an
// error, never a short io.EOF.
func (s *Sprite) Open(ctx context.Context, path string) (io.ReadCloser, error) {
	return s.c.stream(ctx, "GET", s.path("/fs/file"+pathQuery(path)), nil, "")
}

// ReadFile returns a file's contents.
func (s *Sprite) ReadFile(ctx context.Context, path string) ([]byte, error) {
	rc, err := s.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// WriteFile replaces a file by data, atomically, with mode's permission
// bits (0: 0644), owned by the sprite's user.
func (s *Sprite) WriteFile(ctx context.Context, path string, data []byte, mode fs.FileMode) error {
	return s.WriteFrom(ctx, path, bytes.NewReader(data), mode)
}

// WriteFrom is WriteFile with the contents read from r.
func (s *Sprite) WriteFrom(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error {
	q := pathQuery(path)
	if mode.Perm() != 0 {
		q += fmt.Sprintf("&mode=%o", mode.Perm())
	}
	rc, err := s.c.stream(ctx, "PUT", s.path("/fs/file"+q), r, "application/octet-stream")
	if err != nil {
		return err
	}
	return rc.Close()
}

// CopyOut returns a tar stream of path (a file or a tree), its entries
// named from path's base name.
func (s *Sprite) CopyOut(ctx context.Context, path string) (io.ReadCloser, error) {
	return s.c.stream(ctx, "GET", s.path("/fs/tar"+pathQuery(path)), nil, "")
}

// CopyIn unpacks the tar stream r in directory dir; entries may not leave
// it and are owned by the sprite's user.
func (s *Sprite) CopyIn(ctx context.Context, dir string, r io.Reader) error {
	rc, err := s.c.stream(ctx, "PUT", s.path("/fs/tar"+pathQuery(dir)), r, "application/x-tar")
	if err != nil {
		return err
	}
	return rc.Close()
}
