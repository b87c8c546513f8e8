// Package agent is the host-side client of the guest agent. It speaks the
// protocol in package proto over one byte stream and treats the guest as
// hostile: every read is bounded in size and time.
package agent

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

// maxHandshakeJunk bounds the bytes discarded while looking for the guest's
// Ready line (stale bytes from an earlier host session may precede it).
const maxHandshakeJunk = 4 << 20

// maxResponse bounds a JSON response frame from the guest.
const maxResponse = proto.MaxFrame

// ErrAgent wraps failures the guest reported.
var ErrAgent = errors.New("guest agent")

// Client is a connection to one guest agent. It is safe for concurrent use.
type Client struct {
	conn  *relay
	guard *guardConn
	sess  *yamux.Session
	inUse atomic.Int64 // streams opened and not yet closed by the host
}

// Connect performs the handshake on conn and starts multiplexing. Hello is
// re-sent every resend until the guest answers (a guest still busy with a
// previous host session drops the first), until ctx ends.
func Connect(ctx context.Context, conn net.Conn, resend time.Duration) (*Client, error) {
	var raw [proto.NonceLen / 2]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	nonce := hex.EncodeToString(raw[:])
	hello := []byte(proto.Hello + nonce + "\n")

	done := make(chan error, 1)
	go func() {
		for {
			_, got, err := proto.ScanLine(conn, maxHandshakeJunk, nil, proto.Ready)
			if err != nil || got == nonce {
				done <- err
				return
			}
		}
	}()
	send := func(b []byte) error {
		conn.SetWriteDeadline(time.Now().Add(resend))
		_, err := conn.Write(b)
		conn.SetWriteDeadline(time.Time{})
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return nil // the guest is not reading yet; the next resend tries again
		}
		return err
	}
	tick := time.NewTicker(resend)
	defer tick.Stop()
	err := send(hello)
	for err == nil {
		select {
		case err = <-done:
			if err == nil {
				goto ready
			}
		case <-tick.C:
			err = send(hello)
		case <-ctx.Done():
			err = context.Cause(ctx)
		}
	}
	conn.SetReadDeadline(time.Now()) // unblock the scanner
	return nil, fmt.Errorf("agent handshake: %w", err)
ready:
	if err := send([]byte(proto.Go + nonce + "\n")); err != nil {
		return nil, fmt.Errorf("agent handshake: %w", err)
	}
	r := newRelay(conn)
	guard := &guardConn{Conn: r}
	sess, err := yamux.Client(FrameWriter(guard), hostConfig())
	if err != nil {
		return nil, err
	}
	return &Client{conn: r, guard: guard, sess: sess}, nil
}

// What one sprite's guest can make the host hold through the session.
// Data the guest sends waits in its stream's receive buffer, at most one
// window (yamux ends the session on a frame over it), until the host reads
// it; the host opens every stream and at most MaxStreams at once. So the
// buffered bytes of a sprite stay under MaxStreams x StreamWindow (16 MiB),
// whatever the guest does; per stream the host's reader adds at most a
// bufio buffer and one frame (allocated as it arrives).
const (
	// yamux's minimum. The price, measured with wisp bench on gVisor:
	// exec stdout p50 ~115-155 MB/s, against ~140-205 with 16 MiB
	// windows; 4 MiB windows (~145-180) would cost 4x the bound.
	StreamWindow = 256 << 10
	MaxStreams   = 64
	// A stream the host closed is dropped (and reset) this long after,
	// if the guest has not closed its end: yamux keeps buffering for
	// such a stream until then.
	StreamCloseTimeout = 10 * time.Second
)

// hostConfig is the host end's yamux configuration: small windows, a
// short close timeout, an accept backlog of one (the guard refuses
// streams the guest opens before yamux queues them), no keepalive.
func hostConfig() *yamux.Config {
	c := Config()
	c.MaxStreamWindowSize = StreamWindow
	c.StreamCloseTimeout = StreamCloseTimeout
	c.AcceptBacklog = 1
	return c
}

// Config is the guest end's yamux configuration: large windows for bulk
// throughput into the guest, no keepalive (a sleeping VM must not be
// declared dead). The host end uses hostConfig.
func Config() *yamux.Config {
	c := yamux.DefaultConfig()
	c.MaxStreamWindowSize = 16 << 20
	c.EnableKeepAlive = false
	c.ConnectionWriteTimeout = 30 * time.Second
	c.StreamOpenTimeout = 30 * time.Second
	c.LogOutput = io.Discard
	return c
}

// Close ends the session and the underlying connection.
func (c *Client) Close() error {
	c.sess.Close()
	return c.conn.Close()
}

// Park prepares the session to outlive its connection, before the VMM
// that holds the guest's end saves the guest and exits. It refuses while
// a stream is in use (a call in flight would hang while the sprite
// sleeps), waits until the guest has closed its side of the streams the
// host closed, stops the host's writes and waits until the VMM has taken
// every byte written, until ctx ends. Reads go on; once the connection
// ends they wait for Attach. On an error the session cannot be kept:
// Unpark (the VMM goes on) or Close it.
func (c *Client) Park(ctx context.Context) error {
	busy := func() error {
		if n := c.inUse.Load(); n > 0 {
			return fmt.Errorf("%w: park: %d streams in use", ErrAgent, n)
		}
		select {
		case <-c.sess.CloseChan():
			return fmt.Errorf("%w: park: session closed", ErrAgent)
		default:
		}
		return nil
	}
	for c.sess.NumStreams() > 0 {
		if err := busy(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: park: %d streams closing: %w", ErrAgent, c.sess.NumStreams(), context.Cause(ctx))
		case <-time.After(time.Millisecond):
		}
	}
	if err := c.conn.park(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrAgent, err)
	}
	if err := busy(); err != nil {
		return err
	}
	if n := c.sess.NumStreams(); n > 0 {
		return fmt.Errorf("%w: park: %d streams opened meanwhile", ErrAgent, n)
	}
	return nil
}

// Attach gives a parked session the connection to the guest's restored
// end, before the guest runs again; the old connection is closed. Writes
// stay stopped until Unpark.
func (c *Client) Attach(conn net.Conn) { c.conn.attach(conn) }

// Unpark lets the host's writes go on.
func (c *Client) Unpark() { c.conn.unpark() }

// Closed is closed when the session ends (guest gone, channel broken, or
// the guest broke the protocol: see Err).
func (c *Client) Closed() <-chan struct{} { return c.sess.CloseChan() }

// NumStreams returns the streams the session holds, including those the
// host closed and the guest has not.
func (c *Client) NumStreams() int { return c.sess.NumStreams() }

// Err returns an error wrapping ErrHostile once the host ended the
// session because of a frame the guest must never send, else nil.
func (c *Client) Err() error { return c.guard.Err() }

// Stream is one request's stream. Reads are framed and bounded.
type Stream struct {
	s       *yamux.Stream
	br      *bufio.Reader
	release func() // once: the stream is no longer in use
}

// Open opens a stream and sends req as its first frame.
//
// At most MaxStreams streams are open at once, counting those the host
// closed but the guest has not (for up to StreamCloseTimeout): beyond, Open
// waits up to streamWait for one to go, then fails with
// errdefs.ErrUnavailable.
func (c *Client) Open(ctx context.Context, req proto.Request) (*Stream, error) {
	if err := c.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAgent, err)
	}
	if err := c.waitForRoom(ctx); err != nil {
		return nil, err
	}
	c.inUse.Add(1)
	var once sync.Once
	release := func() { once.Do(func() { c.inUse.Add(-1) }) }
	s, err := c.sess.OpenStream()
	if err != nil {
		release()
		return nil, fmt.Errorf("%w: open stream: %w", ErrAgent, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		s.SetWriteDeadline(dl)
	}
	if err := proto.WriteJSON(s, proto.TRequest, req); err != nil {
		release()
		s.Close()
		return nil, fmt.Errorf("%w: send request: %w", ErrAgent, err)
	}
	s.SetWriteDeadline(time.Time{})
	return &Stream{s: s, br: bufio.NewReaderSize(s, 64<<10), release: release}, nil
}

// streamWait is how long Open waits at MaxStreams for a stream to go: a
// burst of short calls finds some whose close is still in flight (the
// guest's half lags on a busy host).
const streamWait = 2 * time.Second

// waitForRoom returns once fewer than MaxStreams streams are open, or
// fails with ErrUnavailable after streamWait (or when ctx ends first).
func (c *Client) waitForRoom(ctx context.Context) error {
	if c.sess.NumStreams() < MaxStreams {
		return nil
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	limit := time.NewTimer(streamWait)
	defer limit.Stop()
	for {
		select {
		case <-t.C:
			if c.sess.NumStreams() < MaxStreams {
				return nil
			}
			continue
		case <-ctx.Done():
		case <-limit.C:
		case <-c.sess.CloseChan():
		}
		return errdefs.WithHint(fmt.Errorf("%w: %d streams open, the most a sprite may hold: %w", ErrAgent, c.sess.NumStreams(), errdefs.ErrUnavailable),
			"wait for running execs and copies to end; a stream the host closed is dropped after "+StreamCloseTimeout.String())
	}
}

// ReadFrame reads the next frame (payload at most proto.MaxFrame).
func (s *Stream) ReadFrame() (byte, []byte, error) { return proto.ReadFrame(s.br, proto.MaxFrame) }

// WriteFrame writes one frame.
func (s *Stream) WriteFrame(t byte, p []byte) error { return proto.WriteFrame(s.s, t, p) }

// SetDeadline bounds both directions.
func (s *Stream) SetDeadline(t time.Time) error { return s.s.SetDeadline(t) }

// Close closes the stream both ways.
func (s *Stream) Close() error {
	s.release()
	return s.s.Close()
}

// Response reads one TResponse frame and converts a guest error into a Go
// error that wraps ErrAgent.
func (s *Stream) Response() (proto.Response, error) {
	var r proto.Response
	if err := proto.ReadJSON(s.br, proto.TResponse, maxResponse, &r); err != nil {
		return r, fmt.Errorf("%w: %w", ErrAgent, err)
	}
	if r.Error != "" {
		return r, &GuestError{Kind: r.Kind, Msg: r.Error}
	}
	return r, nil
}

// GuestError is an error the agent reported for a request.
type GuestError struct {
	Kind string // a proto.Kind* constant
	Msg  string
}

func (e *GuestError) Error() string { return e.Msg }
func (e *GuestError) Unwrap() error { return ErrAgent }

// call runs a request that has a single response.
func (c *Client) call(ctx context.Context, req proto.Request) (proto.Response, error) {
	s, err := c.Open(ctx, req)
	if err != nil {
		return proto.Response{}, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { s.SetDeadline(time.Now()) })
	defer stop()
	return s.Response()
}

// Info asks the guest for its uptime, kernel and memory.
func (c *Client) Info(ctx context.Context) (proto.Info, error) {
	r, err := c.call(ctx, proto.Request{Op: proto.OpInfo})
	if err != nil {
		return proto.Info{}, err
	}
	if r.Info == nil {
		return proto.Info{}, fmt.Errorf("%w: info response without info", ErrAgent)
	}
	return *r.Info, nil
}

// Stat describes one guest path.
func (c *Client) Stat(ctx context.Context, path string) (proto.FileInfo, error) {
	r, err := c.call(ctx, proto.Request{Op: proto.OpStat, Path: path})
	if err != nil {
		return proto.FileInfo{}, err
	}
	if r.File == nil {
		return proto.FileInfo{}, fmt.Errorf("%w: stat response without file", ErrAgent)
	}
	return *r.File, nil
}

// List lists a guest directory (at most proto.MaxList entries).
func (c *Client) List(ctx context.Context, path string) ([]proto.FileInfo, bool, error) {
	r, err := c.call(ctx, proto.Request{Op: proto.OpList, Path: path})
	return r.Files, r.Truncated, err
}

// Stats describes several guest paths in one round trip (see
// proto.OpStats): those that exist, and the entries of the folders named
// "folder/*".
func (c *Client) Stats(ctx context.Context, paths []string) ([]proto.FileInfo, bool, error) {
	r, err := c.call(ctx, proto.Request{Op: proto.OpStats, Paths: paths})
	return r.Files, r.Truncated, err
}

// Mkdir creates a guest directory (and parents when recursive).
func (c *Client) Mkdir(ctx context.Context, path string, mode uint32, recursive bool) error {
	_, err := c.call(ctx, proto.Request{Op: proto.OpMkdir, Path: path, Mode: mode, Recursive: recursive})
	return err
}

// Remove removes a guest path (recursively when asked).
func (c *Client) Remove(ctx context.Context, path string, recursive bool) error {
	_, err := c.call(ctx, proto.Request{Op: proto.OpRemove, Path: path, Recursive: recursive})
	return err
}

// Sync flushes the guest's filesystems.
func (c *Client) Sync(ctx context.Context) error {
	_, err := c.call(ctx, proto.Request{Op: proto.OpSync})
	return err
}

// Shutdown syncs and remounts the guest's root read-only; the VMM may then
// be stopped without losing data.
func (c *Client) Shutdown(ctx context.Context) error {
	_, err := c.call(ctx, proto.Request{Op: proto.OpShutdown})
	return err
}

// SetTime sets the guest clock and mixes seed into its entropy pool.
func (c *Client) SetTime(ctx context.Context, t time.Time, seed []byte) error {
	_, err := c.call(ctx, proto.Request{Op: proto.OpSetTime, Time: t, Seed: seed})
	return err
}

// Buffered reports how many bytes of the stream are read but not consumed.
func (s *Stream) Buffered() int { return s.br.Buffered() }

// Freeze freezes the guest's root filesystem; Thaw ends it. The guest thaws
// by itself after proto.FreezeLimit.
func (c *Client) Freeze(ctx context.Context) error {
	_, err := c.call(ctx, proto.Request{Op: proto.OpFreeze})
	return err
}

func (c *Client) Thaw(ctx context.Context) error {
	_, err := c.call(ctx, proto.Request{Op: proto.OpThaw})
	return err
}

// SetIdentity gives the guest a new hostname, machine-id and MAC, reseeds
// its random number generator and sets its clock.
func (c *Client) SetIdentity(ctx context.Context, id proto.Request) error {
	id.Op = proto.OpIdentity
	_, err := c.call(ctx, id)
	return err
}
