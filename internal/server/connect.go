package server

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/sprite"
)

// ConnectProto is the protocol name of the TCP upgrade of connect.
const ConnectProto = "tcp"

// connect opens a TCP connection to a port at the sprite's address, waking
// or booting the sprite first, answers 101 and relays bytes both ways
// until both sides are done (`wisp proxy`). The sprite counts as active
// while the connection is open. The host reaches its sprites whatever
// their egress policy, so this works under --deny-all too.
func (s *Server) connect(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), ConnectProto) {
		writeError(w, fmt.Errorf("connect needs `Upgrade: %s`: %w", ConnectProto, errdefs.ErrInvalid))
		return
	}
	port, err := strconv.Atoi(r.URL.Query().Get("port"))
	if err != nil || port < 1 || port > 65535 {
		writeError(w, fmt.Errorf("port %q: want 1-65535: %w", r.URL.Query().Get("port"), errdefs.ErrInvalid))
		return
	}
	name := r.PathValue("name")
	rec, woke, release, err := s.Sprites.Use(r.Context(), name)
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	if rec.Address == "" {
		writeError(w, fmt.Errorf("sprite %q has no network (wispd --network=false): %w", name, errdefs.ErrUnavailable))
		return
	}
	addr := net.JoinHostPort(rec.Address, strconv.Itoa(port))
	if woke {
		wait := s.PortWait
		if wait == 0 {
			wait = 10 * time.Second
		}
		waitPort(r.Context(), addr, wait) // the dial below says what went wrong
	}
	up, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		writeError(w, errdefs.WithHint(fmt.Errorf("nothing answers on port %d in sprite %q (%v): %w", port, name, err, errdefs.ErrUnavailable),
			"start a server on that port in the sprite"))
		return
	}
	defer up.Close()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, err)
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", ConnectProto)
	if err := brw.Flush(); err != nil {
		return
	}
	splice(conn, brw.Reader, up)
	s.Log.Debug("connection closed", sprite.LogSprite, name, "port", port)
}

// splice copies client (read through cr, which may hold buffered bytes) to
// up and up to client, passing each end-of-stream on as a half-close, and
// returns when both directions are done.
func splice(client net.Conn, cr io.Reader, up net.Conn) {
	var wg sync.WaitGroup
	wg.Go(func() {
		io.Copy(up, cr)
		closeWrite(up)
	})
	io.Copy(client, up)
	closeWrite(client)
	wg.Wait()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		c.Close()
	}
}
