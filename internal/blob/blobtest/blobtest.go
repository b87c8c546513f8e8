// Package blobtest runs an S3-compatible server in process for tests:
// gofakes3 with an in-memory backend, on a loopback (or given) address, with
// one bucket made. Objects are written as single PUTs by package blob, so
// gofakes3's conditional PUTs hold (its multipart path ignores them).
package blobtest

import (
	"io"
	"log"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// Server is a running fake S3.
type Server struct {
	// URL and Bucket reach the bucket, with any credentials (gofakes3
	// checks none): blob.S3Config{Endpoint: s.URL, Bucket: s.Bucket,
	// AccessKey: "test", SecretKey: "test"}.
	URL, Bucket string
	// Clock sets the objects' modified times; it starts at the time the
	// server was made and moves only when advanced.
	Clock gofakes3.TimeSourceAdvancer
	// Backend is the store itself, for a test to inspect.
	Backend *s3mem.Backend
}

// New serves a fake S3 with bucket "wisp" on addr ("" for 127.0.0.1:0)
// until the test ends.
func New(t testing.TB, addr string) *Server {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	clock := gofakes3.FixedTimeSource(time.Now().UTC().Truncate(time.Second))
	backend := s3mem.New(s3mem.WithTimeSource(clock))
	if err := backend.CreateBucket("wisp"); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: gofakes3.New(backend).Server(),
		// gofakes3 writes a second status line on some errors (a 404 to a
		// HEAD); net/http's complaint about it is noise.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &Server{
		URL:     "http://" + ln.Addr().String(),
		Bucket:  "wisp",
		Clock:   clock,
		Backend: backend,
	}
}
