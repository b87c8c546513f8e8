package blob

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sync"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"golang.org/x/sync/errgroup"
)

// Hydrate writes the manifest's files under dir. Each file is made aside
// (a temporary file in its directory), fsynced, and only once every file is
// whole are they renamed into place, so a failed Hydrate leaves dir as it
// was, without partial files. Holes stay holes.
//
// bases maps a manifest file name to a local file with bytes in common
// (the image template a disk was cloned from, this host's older copy of
// the same file; "" or a missing file is skipped): the chunk hashes of every
// base (kept in the cache directory) are looked up, and a chunk any base
// holds is copied from it, checked against its hash, instead of downloaded.
// A base may be the very file Hydrate replaces.
//
// Every downloaded chunk is checked against its hash: a chunk that is
// missing from the store or corrupt fails the Hydrate with an error that
// wraps errdefs.ErrUnavailable and names the chunk.
func (s *Store) Hydrate(ctx context.Context, m Manifest, dir string, bases map[string]string) (Stats, error) {
	begin := time.Now()
	if err := m.Validate(); err != nil {
		return Stats{}, fmt.Errorf("hydrate: %w", err)
	}
	cs := m.ChunkSize
	var st counters
	fail := func(err error) (Stats, error) {
		return st.stats(len(m.Files), time.Since(begin)), fmt.Errorf("hydrate %s gen %d: %w", m.Sprite, m.Generation, err)
	}

	// Local sources of chunks: the bases, then chunks this Hydrate wrote.
	var mu sync.Mutex
	local := map[string]source{}
	pending := map[string]chan struct{}{} // chunks being fetched
	for name, p := range bases {
		if p == "" {
			continue
		}
		f, idx, err := s.openBase(ctx, p, cs)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fail(fmt.Errorf("base %s for %q: %w", p, name, err))
		}
		defer f.Close()
		for i, h := range idx {
			if h != "" {
				if _, ok := local[h]; !ok {
					local[h] = source{f, int64(i) * int64(cs)}
				}
			}
		}
	}

	// Every file is made aside first, confined to dir (os.Root: a symlink
	// in dir cannot take a write elsewhere).
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fail(err)
	}
	defer root.Close()
	tmps := make([]*os.File, len(m.Files))
	tmpNames := make([]string, len(m.Files))
	done := false
	defer func() {
		if done {
			return
		}
		for i, t := range tmps {
			if t != nil {
				t.Close()
				root.Remove(tmpNames[i])
			}
		}
	}()
	for i, fe := range m.Files {
		if d := path.Dir(fe.Name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return fail(err)
			}
		}
		tmpNames[i] = path.Join(path.Dir(fe.Name), "."+path.Base(fe.Name)+".hydrate-"+rand.Text()[:10])
		t, err := root.OpenFile(tmpNames[i], os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fail(err)
		}
		tmps[i] = t
		if err := t.Truncate(fe.Size); err != nil {
			return fail(err)
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.parallel())
	for i, fe := range m.Files {
		t := tmps[i]
		for j, h := range fe.Chunks {
			if h == "" {
				continue
			}
			if gctx.Err() != nil {
				break
			}
			off := int64(j) * int64(cs)
			n := int(min(int64(cs), fe.Size-off))
			g.Go(func() error {
				var buf []byte
				if cs == ChunkSize {
					pb := s.bufs.Get().(*[]byte)
					defer s.bufs.Put(pb)
					buf = (*pb)[:n]
				} else {
					buf = make([]byte, n)
				}
				// One worker fetches a chunk; others wanting the same
				// chunk wait for it and copy it locally.
				mu.Lock()
				src, ok := local[h]
				wait, owner := pending[h], false
				if !ok && wait == nil {
					pending[h], owner = make(chan struct{}), true
				}
				mu.Unlock()
				if !ok && !owner {
					select {
					case <-wait:
					case <-gctx.Done():
						return gctx.Err()
					}
					mu.Lock()
					src, ok = local[h]
					mu.Unlock()
				}
				if ok && s.readLocal(src, buf, h) {
					st.reused.Add(1)
				} else if err := s.download(gctx, h, buf, &st); err != nil {
					return fmt.Errorf("file %q chunk %d: %w", fe.Name, j, err)
				}
				if _, err := t.WriteAt(buf, off); err != nil {
					return err
				}
				st.chunks.Add(1)
				st.bytesNonZero.Add(int64(n))
				mu.Lock()
				if _, ok := local[h]; !ok {
					local[h] = source{t, off}
				}
				if owner {
					close(pending[h])
					delete(pending, h)
				}
				mu.Unlock()
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	dirs := map[string]bool{}
	for i, fe := range m.Files {
		t := tmps[i]
		if err := t.Chmod(os.FileMode(fe.Mode)); err != nil {
			return fail(err)
		}
		if err := t.Sync(); err != nil {
			return fail(err)
		}
		dirs[path.Dir(fe.Name)] = true
	}
	for i, fe := range m.Files {
		if err := root.Rename(tmpNames[i], fe.Name); err != nil {
			// Files renamed before this one stay: they are whole.
			return fail(err)
		}
		tmps[i].Close()
		tmps[i] = nil
	}
	done = true
	for d := range dirs {
		if err := syncDir(root, d); err != nil {
			return fail(err)
		}
	}
	stats := st.stats(len(m.Files), time.Since(begin))
	s.log.Debug("hydrated", logSprite, m.Sprite, logGeneration, m.Generation, logStats, stats.String())
	return stats, nil
}

// source is where a chunk's bytes are found locally.
type source struct {
	f   *os.File
	off int64
}

// readLocal reads a chunk from a local source and reports whether it holds
// the bytes hashing to h (a base may have changed since it was indexed).
func (s *Store) readLocal(src source, buf []byte, h string) bool {
	n, err := src.f.ReadAt(buf, src.off)
	if n != len(buf) || (err != nil && err != io.EOF) {
		return false
	}
	return hashOf(buf) == h
}

// download fetches chunk h into buf (exactly len(buf) bytes) and checks it.
func (s *Store) download(ctx context.Context, h string, buf []byte, st *counters) error {
	key := chunkKey(h)
	rc, err := s.b.Get(ctx, key)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("chunk %s: %v: %w", h, err, errdefs.ErrUnavailable)
	}
	defer rc.Close()
	zb := s.zbufs.Get().(*[]byte)
	defer s.zbufs.Put(zb)
	z, err := readAllInto((*zb)[:0], io.LimitReader(rc, int64(len(buf))+4096))
	*zb = z[:0]
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("chunk %s: read: %v: %w", h, err, errdefs.ErrUnavailable)
	}
	out, err := s.dec.DecodeAll(z, buf[:0])
	if err != nil || len(out) != len(buf) || &out[0] != &buf[0] || hashOf(out) != h {
		return fmt.Errorf("chunk %s is corrupt in the store (%d compressed bytes do not decode to the %d bytes hashing to it): %w",
			h, len(z), len(buf), errdefs.ErrUnavailable)
	}
	st.downloaded.Add(1)
	st.bytesDownloaded.Add(int64(len(z)))
	return nil
}

func readAllInto(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

func syncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
