// Package blob keeps sprite files in any S3-compatible object store as
// content-addressed chunks: each file is cut into ChunkSize chunks, each
// non-zero chunk is stored once, zstd-compressed, under the sha256 of its
// bytes, and a manifest per sprite generation lists the chunks of every
// file. Publish uploads what the store does not hold yet and writes the
// manifest with a conditional PUT; Hydrate rebuilds the files, copying
// chunks it already has locally (an image template, an older copy) instead
// of downloading them; Sweep deletes what no live manifest reaches.
//
// Object layout in the bucket:
//
//	chunks/<hh>/<sha256>                  zstd of one chunk (hh: the hash's first two hex digits)
//	sprites/<sprite>/gen/<%020d>.json     a manifest, written once
package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"
)

// Stats says what a Publish or a Hydrate did.
type Stats struct {
	Files        int
	BytesRead    int64 // bytes read from local files (data extents only: holes are not read)
	BytesNonZero int64 // bytes in non-zero chunks
	Chunks       int   // non-zero chunks
	// Publish
	ChunksUploaded int
	BytesUploaded  int64 // compressed
	ChunksReused   int   // Publish: already in the store; Hydrate: copied from local bytes
	// Hydrate
	ChunksDownloaded int
	BytesDownloaded  int64 // compressed
	Took             time.Duration
}

func (st Stats) String() string {
	return fmt.Sprintf("%d files, %d chunks (%d MiB non-zero), %d uploaded (%d KiB), %d downloaded (%d KiB), %d reused, in %v",
		st.Files, st.Chunks, st.BytesNonZero>>20, st.ChunksUploaded, st.BytesUploaded>>10,
		st.ChunksDownloaded, st.BytesDownloaded>>10, st.ChunksReused, st.Took.Round(time.Millisecond))
}

// counters is Stats under concurrent update.
type counters struct {
	bytesRead, bytesNonZero, chunks atomic.Int64
	uploaded, bytesUploaded, reused atomic.Int64
	downloaded, bytesDownloaded     atomic.Int64
}

func (c *counters) stats(files int, took time.Duration) Stats {
	return Stats{
		Files: files, BytesRead: c.bytesRead.Load(), BytesNonZero: c.bytesNonZero.Load(), Chunks: int(c.chunks.Load()),
		ChunksUploaded: int(c.uploaded.Load()), BytesUploaded: c.bytesUploaded.Load(), ChunksReused: int(c.reused.Load()),
		ChunksDownloaded: int(c.downloaded.Load()), BytesDownloaded: c.bytesDownloaded.Load(), Took: took,
	}
}

// Store is a chunk store on a Bucket. Its methods are safe for concurrent
// use.
type Store struct {
	b        Bucket
	cacheDir string
	log      *slog.Logger
	enc      *zstd.Encoder
	dec      *zstd.Decoder
	bufs     sync.Pool // *[]byte of ChunkSize
	zbufs    sync.Pool // *[]byte for a compressed chunk

	// Parallel bounds the chunk transfers in flight (default 8).
	Parallel int
	// ReuseWindow is how recent a chunk found in the store must be for
	// Publish to reference it without uploading it again, and the longest a
	// Publish may run before writing its manifest (default 1 h). Sweep is
	// safe against publishes in flight when its grace is at least twice
	// this (and the hosts' clocks agree with the store's within the rest).
	ReuseWindow time.Duration
	// Now is the clock (default time.Now); tests set it.
	Now func() time.Time
	// BeforeManifest, if set, is called by Publish after the chunks are
	// uploaded, before the manifest is written (a test knob: fleet's
	// failpoint kills the daemon there).
	BeforeManifest func()
}

// New returns a store on b. cacheDir, a local directory, keeps the chunk
// hashes of base files between Hydrates; "" keeps none.
func New(b Bucket, cacheDir string, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(1<<20), zstd.WithAllLitEntropyCompression(true))
	if err != nil {
		panic(err) // only on bad options
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(maxChunkSize), zstd.WithDecoderMaxWindow(maxChunkSize))
	if err != nil {
		panic(err)
	}
	s := &Store{b: b, cacheDir: cacheDir, log: log, enc: enc, dec: dec, Parallel: 8, ReuseWindow: time.Hour, Now: time.Now}
	s.bufs.New = func() any { b := make([]byte, ChunkSize); return &b }
	s.zbufs.New = func() any { b := make([]byte, 0, ChunkSize+1024); return &b }
	return s
}

func (s *Store) parallel() int { return max(1, s.Parallel) }

func (s *Store) now() time.Time { return s.Now() }

// chunk is one chunk of a local file, handed to a scan's callback.
type chunk struct {
	index int
	off   int64
	data  []byte // valid during the callback only
	hash  string
}

// scanChunks reads f's chunks of cs bytes that hold data, skipping holes
// (SEEK_DATA/SEEK_HOLE where the system has them) and chunks of zeros, and
// calls fn for each other chunk, up to parallel at once. It returns the
// number of chunks of the file; those fn did not see are zero.
func (s *Store) scanChunks(ctx context.Context, f *os.File, size int64, cs int, st *counters, fn func(c chunk) error) error {
	exts, err := dataExtents(f, size)
	if err != nil {
		return fmt.Errorf("%s: find data: %w", f.Name(), err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.parallel())
	next := int64(0) // first chunk index not yet scheduled
	for _, e := range exts {
		first, last := max(e[0]/int64(cs), next), (e[1]-1)/int64(cs)
		for i := first; i <= last; i++ {
			if gctx.Err() != nil {
				break
			}
			g.Go(func() error {
				off := i * int64(cs)
				n := int(min(int64(cs), size-off))
				var buf []byte
				var pb *[]byte
				if cs == ChunkSize {
					pb = s.bufs.Get().(*[]byte)
					defer s.bufs.Put(pb)
					buf = (*pb)[:n]
				} else {
					buf = make([]byte, n)
				}
				got, err := f.ReadAt(buf, off)
				if got != n {
					if err == nil || err == io.EOF {
						err = fmt.Errorf("file shrank while read: %w", io.ErrUnexpectedEOF)
					}
					return fmt.Errorf("%s: read at %d: %w", f.Name(), off, err)
				}
				st.bytesRead.Add(int64(n))
				if isZero(buf) {
					return nil
				}
				sum := sha256.Sum256(buf)
				st.chunks.Add(1)
				st.bytesNonZero.Add(int64(n))
				return fn(chunk{index: int(i), off: off, data: buf, hash: hex.EncodeToString(sum[:])})
			})
		}
		next = max(next, last+1)
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

var zeros [ChunkSize]byte

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

func hashOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
