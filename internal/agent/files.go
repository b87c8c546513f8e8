package agent

import (
	"context"
	"fmt"
	"io"

	"github.com/wisp-sh/wisp/internal/agent/proto"
)

// ReadFile opens a guest file for reading: it returns the file's info and
// its bytes. The reader fails (not io.EOF) if the guest could not send
// the whole file. Close it to end the stream.
func (c *Client) ReadFile(ctx context.Context, path string) (proto.FileInfo, io.ReadCloser, error) {
	s, err := c.Open(ctx, proto.Request{Op: proto.OpRead, Path: path})
	if err != nil {
		return proto.FileInfo{}, nil, err
	}
	r, err := s.Response()
	if err != nil {
		s.Close()
		return proto.FileInfo{}, nil, err
	}
	if r.File == nil {
		s.Close()
		return proto.FileInfo{}, nil, fmt.Errorf("%w: read response without file", ErrAgent)
	}
	return *r.File, newDataReader(ctx, s), nil
}

// WriteFile replaces a guest file by what r holds (atomically: a broken
// stream leaves the old file), with mode (0: 0644) and owned by user
// ("": the sprite user).
func (c *Client) WriteFile(ctx context.Context, path string, mode uint32, user string, r io.Reader) error {
	return c.sendData(ctx, proto.Request{Op: proto.OpWrite, Path: path, Mode: mode, User: user}, r)
}

// TarOut returns a tar stream of path, its entries named from path's base
// name. The reader fails (not io.EOF) if the guest could not finish it.
func (c *Client) TarOut(ctx context.Context, path string) (io.ReadCloser, error) {
	s, err := c.Open(ctx, proto.Request{Op: proto.OpTarOut, Path: path})
	if err != nil {
		return nil, err
	}
	if _, err := s.Response(); err != nil {
		s.Close()
		return nil, err
	}
	return newDataReader(ctx, s), nil
}

// TarIn unpacks the tar stream r under the guest directory dir; entries
// may not leave it and are owned by user ("": the sprite user).
func (c *Client) TarIn(ctx context.Context, dir, user string, r io.Reader) error {
	return c.sendData(ctx, proto.Request{Op: proto.OpTarIn, Path: dir, User: user}, r)
}

// sendData sends r as TData frames, then TEnd, and reads the response.
func (c *Client) sendData(ctx context.Context, req proto.Request, r io.Reader) error {
	s, err := c.Open(ctx, req)
	if err != nil {
		return err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	if err := CopyIn(s, r, proto.TData); err != nil {
		return err
	}
	if err := s.WriteFrame(proto.TEnd, nil); err != nil {
		return fmt.Errorf("%w: %w", ErrAgent, err)
	}
	_, err = s.Response()
	return err
}

// dataReader reads the TData frames of a stream until TEnd.
type dataReader struct {
	s    *Stream
	stop func() bool
	buf  []byte
	err  error
}

func newDataReader(ctx context.Context, s *Stream) *dataReader {
	return &dataReader{s: s, stop: context.AfterFunc(ctx, func() { s.Close() })}
}

func (d *dataReader) Read(p []byte) (int, error) {
	for len(d.buf) == 0 && d.err == nil {
		t, b, err := d.s.ReadFrame()
		switch {
		case err != nil:
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			d.err = fmt.Errorf("%w: data stream: %w", ErrAgent, err)
		case t == proto.TData:
			d.buf = b
		case t == proto.TEnd:
			d.err = io.EOF
		case t == proto.TResponse:
			var r proto.Response
			proto.DecodeJSON(b, &r)
			d.err = &GuestError{Kind: r.Kind, Msg: r.Error}
		default:
			d.err = fmt.Errorf("%w: unexpected frame type %d in a data stream", ErrAgent, t)
		}
	}
	if len(d.buf) > 0 {
		n := copy(p, d.buf)
		d.buf = d.buf[n:]
		return n, nil
	}
	return 0, d.err
}

func (d *dataReader) Close() error {
	d.stop()
	return d.s.Close()
}
