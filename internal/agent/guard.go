package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
)

// The yamux frame header (spec.md of hashicorp/yamux): version, type,
// flags, stream ID, length; only data frames carry a payload (of length
// bytes). The other types use length for a window delta, a ping ID or a
// go-away code.
const (
	yamuxHeaderSize = 12
	yamuxData       = 0
	yamuxWindow     = 1
	yamuxPing       = 2
	yamuxGoAway     = 3
	yamuxSYN        = 1
)

// ErrHostile is what a session ends with when the guest broke the rules
// of the host's session: it opened a stream or sent a ping. Neither ever
// comes from a real agent (the host opens every stream; keepalives are
// off on both ends), and both cost the host: each guest-opened stream
// buffers a window of data until accepted, and yamux answers each ping
// from a goroutine of its own.
var ErrHostile = errors.New("guest broke the session protocol")

// guardConn reads the guest's side of the session frame by frame and
// refuses, before yamux sees them, the frames only a hostile guest sends.
// Payload sizes are left to yamux, which ends the session on a data frame
// over the stream's window.
// Read is called by yamux's one receiving goroutine only.
type guardConn struct {
	net.Conn

	hdr     [yamuxHeaderSize]byte
	pending []byte // header bytes not yet returned
	left    uint32 // payload bytes of the current data frame not yet returned
	hostile atomic.Pointer[error]
}

func (g *guardConn) Read(p []byte) (int, error) {
	if err := g.Err(); err != nil {
		return 0, err
	}
	if len(g.pending) == 0 && g.left == 0 {
		if _, err := io.ReadFull(g.Conn, g.hdr[:]); err != nil {
			return 0, err
		}
		if err := check(g.hdr); err != nil {
			g.hostile.Store(&err)
			return 0, err
		}
		g.pending = g.hdr[:]
		if g.hdr[1] == yamuxData {
			g.left = binary.BigEndian.Uint32(g.hdr[8:12])
		}
	}
	if len(g.pending) > 0 {
		n := copy(p, g.pending)
		g.pending = g.pending[n:]
		return n, nil
	}
	if uint32(len(p)) > g.left {
		p = p[:g.left]
	}
	n, err := g.Conn.Read(p)
	g.left -= uint32(n)
	return n, err
}

// check refuses a frame header the guest must never send.
func check(h [yamuxHeaderSize]byte) error {
	typ, flags, id := h[1], binary.BigEndian.Uint16(h[2:4]), binary.BigEndian.Uint32(h[4:8])
	switch {
	case typ == yamuxPing:
		return fmt.Errorf("%w: it sent a ping", ErrHostile)
	case (typ == yamuxData || typ == yamuxWindow) && flags&yamuxSYN != 0:
		return fmt.Errorf("%w: it opened stream %d", ErrHostile, id)
	}
	return nil
}

// Err returns why the guard ended the session, or nil.
func (g *guardConn) Err() error {
	if e := g.hostile.Load(); e != nil {
		return *e
	}
	return nil
}
