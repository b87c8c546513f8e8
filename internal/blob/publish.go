package blob

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Publish makes generation gen of sprite from files: it uploads every
// non-zero chunk the store does not hold yet (zstd, fastest level, at
// chunks/<hh>/<sha256>), skipping holes and chunks of zeros, chunks listed in
// prev (the sprite's previous manifest, still live: its head or a
// checkpoint; or nil) and chunks the store already
// has (a HEAD; a chunk older than ReuseWindow is uploaded again so that a
// Sweep in progress cannot take it), then writes the manifest with a
// conditional PUT at ManifestKey(sprite, gen).
//
// A crash or error before the manifest leaves nothing referenced: the
// chunks it uploaded are swept after the grace period. Publishing a
// generation that exists fails with ErrConflict. meta, if not empty, must
// be JSON; it is kept in the manifest as is.
//
// The files must not change while they are published (the sprite is asleep
// or stopped).
func (s *Store) Publish(ctx context.Context, sprite string, gen uint64, host string, files []File, meta []byte, prev *Manifest) (Manifest, Stats, error) {
	start, begin := s.now(), time.Now()
	if err := checkSprite(sprite); err != nil {
		return Manifest{}, Stats{}, fmt.Errorf("publish: %w", err)
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Name
	}
	if err := checkNames(names); err != nil {
		return Manifest{}, Stats{}, fmt.Errorf("publish %s gen %d: %w", sprite, gen, err)
	}
	if len(meta) > 0 && !json.Valid(meta) {
		return Manifest{}, Stats{}, fmt.Errorf("publish %s gen %d: meta is not JSON: %w", sprite, gen, errdefs.ErrInvalid)
	}
	m := Manifest{Sprite: sprite, Generation: gen, Host: host, Created: start.UTC(), ChunkSize: ChunkSize, Files: make([]FileEntry, len(files))}
	if len(meta) > 0 {
		m.Meta = append(json.RawMessage(nil), meta...)
	}

	var mu sync.Mutex
	known := map[string]bool{} // in the store, or being uploaded by this publish
	if prev != nil && prev.ChunkSize == ChunkSize {
		for _, f := range prev.Files {
			for _, h := range f.Chunks {
				if h != "" {
					known[h] = true
				}
			}
		}
	}
	var st counters
	for i, file := range files {
		if err := s.publishFile(ctx, file, &m.Files[i], known, &mu, &st); err != nil {
			return Manifest{}, st.stats(i, time.Since(begin)), fmt.Errorf("publish %s gen %d: %w", sprite, gen, err)
		}
	}
	stats := st.stats(len(files), 0)

	// Chunks this publish found or uploaded are safe from Sweep only while
	// it has not run longer than the window (see ReuseWindow).
	if took := s.now().Sub(start); took > s.ReuseWindow {
		return Manifest{}, stats, fmt.Errorf("publish %s gen %d: took %v, over the reuse window of %v: chunks it relies on may have been swept: %w",
			sprite, gen, took, s.ReuseWindow, errdefs.ErrUnavailable)
	}
	body, err := json.Marshal(m)
	if err != nil {
		return Manifest{}, stats, fmt.Errorf("publish %s gen %d: %w", sprite, gen, err)
	}
	if s.BeforeManifest != nil {
		s.BeforeManifest()
	}
	if err := s.b.PutIfAbsent(ctx, ManifestKey(sprite, gen), body); err != nil {
		if errors.Is(err, ErrConflict) {
			return Manifest{}, stats, fmt.Errorf("publish %s: generation %d is already published: %w", sprite, gen, err)
		}
		return Manifest{}, stats, fmt.Errorf("publish %s gen %d: manifest: %w", sprite, gen, err)
	}
	stats.Took = time.Since(begin)
	s.log.Debug("published", logSprite, sprite, logGeneration, gen, logStats, stats.String())
	return m, stats, nil
}

func (s *Store) publishFile(ctx context.Context, file File, e *FileEntry, known map[string]bool, mu *sync.Mutex, st *counters) error {
	f, err := os.Open(file.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file: %w", file.Path, errdefs.ErrInvalid)
	}
	size := fi.Size()
	*e = FileEntry{Name: file.Name, Size: size, Mode: uint32(fi.Mode().Perm()),
		Chunks: make([]string, (size+ChunkSize-1)/ChunkSize)}
	return s.scanChunks(ctx, f, size, ChunkSize, st, func(c chunk) error {
		e.Chunks[c.index] = c.hash
		mu.Lock()
		have := known[c.hash]
		known[c.hash] = true
		mu.Unlock()
		if have {
			st.reused.Add(1)
			return nil
		}
		key := chunkKey(c.hash)
		mod, err := s.b.Stat(ctx, key)
		switch {
		case err == nil && s.now().Sub(mod) < s.ReuseWindow:
			st.reused.Add(1)
			return nil
		case err != nil && !errors.Is(err, errdefs.ErrNotFound):
			return fmt.Errorf("chunk %s: %w", c.hash, err)
		}
		zb := s.zbufs.Get().(*[]byte)
		z := s.enc.EncodeAll(c.data, (*zb)[:0])
		defer func() { *zb = z[:0]; s.zbufs.Put(zb) }() // keeps a grown buffer
		if err := s.b.Put(ctx, key, z); err != nil {
			return fmt.Errorf("chunk %s: %w", c.hash, err)
		}
		st.uploaded.Add(1)
		st.bytesUploaded.Add(int64(len(z)))
		return nil
	})
}
