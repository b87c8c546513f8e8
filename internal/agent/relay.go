package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// relay is the session's byte stream to the guest, on a connection that
// a sleep can replace: the VMM that held the other end exits and a new
// one, restored from its state, takes the guest's side over. The session
// (yamux, its streams, the guest's) goes on as if the stream had not
// broken, so no byte may be lost or doubled at the swap:
//
//   - host to guest: Park stops the host's writes between two of them and
//     waits until the VMM has taken every byte written (the socket's send
//     queue is empty: the bytes are in the guest's memory, which the
//     state keeps); the VMM then stops and saves.
//   - guest to host: the old connection is read to its end (the VMM writes
//     what the guest sent before it stopped), and the new one carries
//     what the guest sends after it resumes.
//
// While parked, the end of the old connection is not the end of the
// session: a read waits for Attach.
type relay struct {
	wsem chan struct{} // held by a write in progress, or by Park

	mu     sync.Mutex
	cond   *sync.Cond
	conn   net.Conn
	gen    int  // bumped by Attach
	parked bool // writes wait; the end of conn is not the session's
	closed bool
}

func newRelay(conn net.Conn) *relay {
	r := &relay{conn: conn, wsem: make(chan struct{}, 1)}
	r.cond = sync.NewCond(&r.mu)
	return r
}

var errRelayClosed = errors.New("agent connection closed")

func (r *relay) Read(p []byte) (int, error) {
	for {
		r.mu.Lock()
		c, gen := r.conn, r.gen
		r.mu.Unlock()
		n, err := c.Read(p)
		if n > 0 || err == nil {
			return n, nil
		}
		r.mu.Lock()
		// A parked session outlives its connection's end; one attached
		// meanwhile replaces it.
		for r.parked && r.gen == gen && !r.closed {
			r.cond.Wait()
		}
		again := r.gen != gen && !r.closed
		r.mu.Unlock()
		if !again {
			return 0, err
		}
	}
}

func (r *relay) Write(p []byte) (int, error) {
	r.wsem <- struct{}{}
	defer func() { <-r.wsem }()
	r.mu.Lock()
	for r.parked && !r.closed {
		r.cond.Wait()
	}
	c, closed := r.conn, r.closed
	r.mu.Unlock()
	if closed {
		return 0, errRelayClosed
	}
	return c.Write(p)
}

// park stops writes once the one in progress is done, and waits until the
// peer has read every byte written, for as long as ctx lets it. On an
// error writes may be stopped: the caller unparks or closes.
func (r *relay) park(ctx context.Context) error {
	select {
	case r.wsem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("park: a write to the guest is stuck: %w", context.Cause(ctx))
	}
	r.mu.Lock()
	r.parked = true
	c := r.conn
	r.mu.Unlock()
	<-r.wsem
	for {
		n, err := unsent(c)
		if err != nil {
			return fmt.Errorf("park: %w", err)
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("park: the guest has not taken what was written (%d bytes queued): %w", n, context.Cause(ctx))
		case <-time.After(time.Millisecond):
		}
	}
}

// attach makes conn the stream's connection (reads go on from it; writes
// stay parked until unpark) and closes the old one.
func (r *relay) attach(conn net.Conn) {
	r.mu.Lock()
	old := r.conn
	r.conn, r.gen = conn, r.gen+1
	r.cond.Broadcast()
	r.mu.Unlock()
	old.Close()
}

// unpark lets writes go on.
func (r *relay) unpark() {
	r.mu.Lock()
	r.parked = false
	r.cond.Broadcast()
	r.mu.Unlock()
}

func (r *relay) Close() error {
	r.mu.Lock()
	r.closed = true
	c := r.conn
	r.cond.Broadcast()
	r.mu.Unlock()
	return c.Close()
}

func (r *relay) current() net.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conn
}

func (r *relay) LocalAddr() net.Addr                { return r.current().LocalAddr() }
func (r *relay) RemoteAddr() net.Addr               { return r.current().RemoteAddr() }
func (r *relay) SetDeadline(t time.Time) error      { return r.current().SetDeadline(t) }
func (r *relay) SetReadDeadline(t time.Time) error  { return r.current().SetReadDeadline(t) }
func (r *relay) SetWriteDeadline(t time.Time) error { return r.current().SetWriteDeadline(t) }

var _ io.ReadWriteCloser = (*relay)(nil)
