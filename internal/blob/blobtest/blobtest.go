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
	"sync"
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
	// Clock sets the objects' modified times: the wall clock, plus what a
	// test advanced it by.
	Clock *Clock
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
	clock := &Clock{}
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

// Clock is the wall clock moved forward by Advance, so a test can make
// objects old without waiting.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

var _ gofakes3.TimeSourceAdvancer = (*Clock)(nil)

// Now returns the wall clock plus the advance.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Since returns c.Now().Sub(t).
func (c *Clock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}
