package server

import (
	"bufio"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHTTPServerBounds: the API's server refuses a huge header and does
// not keep idle or slow connections for ever.
func TestHTTPServerBounds(t *testing.T) {
	hs := (&Server{}).HTTPServer()
	if hs.IdleTimeout <= 0 || hs.IdleTimeout > 5*time.Minute {
		t.Errorf("IdleTimeout = %s, want a bound of minutes at most", hs.IdleTimeout)
	}
	if hs.ReadHeaderTimeout <= 0 || hs.ReadHeaderTimeout > time.Minute {
		t.Errorf("ReadHeaderTimeout = %s", hs.ReadHeaderTimeout)
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	// 256 KiB of header: over the bound, under net/http's default (1 MiB).
	req := "GET /v1/sprites HTTP/1.1\r\nHost: wisp\r\nX-Junk: " + strings.Repeat("a", 256<<10) + "\r\n\r\n"
	go conn.Write([]byte(req))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("256 KiB of header: status %d, want 431", resp.StatusCode)
	}
}
