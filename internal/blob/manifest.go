package blob

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// ChunkSize is the size of the chunks Publish cuts files into.
const ChunkSize = 64 << 10

// Limits a manifest read from the store must keep.
const (
	maxManifestBytes = 64 << 20
	minChunkSize     = 4 << 10
	maxChunkSize     = 16 << 20
	maxFileSize      = 16 << 40
	maxFiles         = 1024
	maxNameLen       = 1024
)

// File is one local file to publish under a name of the manifest.
type File struct {
	Name string // name in the manifest, relative: "disk.img", "sleep/memory", "sleep/state"
	Path string // local file to publish
}

// Manifest is one generation of a sprite's files: the chunks each file is
// made of, in order. It is written once (conditional PUT) and never changed.
type Manifest struct {
	Sprite     string          `json:"sprite"`
	Generation uint64          `json:"generation"`
	Host       string          `json:"host"`
	Created    time.Time       `json:"created"`
	ChunkSize  int             `json:"chunk_size"`
	Files      []FileEntry     `json:"files"`
	Meta       json.RawMessage `json:"meta,omitempty"` // the sprite's record, opaque to blob
}

// FileEntry is one file of a manifest.
type FileEntry struct {
	Name   string   `json:"name"`
	Size   int64    `json:"size"`
	Mode   uint32   `json:"mode"`   // permission bits
	Chunks []string `json:"chunks"` // hex sha256 of each uncompressed chunk; "" is a chunk of zeros (a hole, never stored)
}

// ManifestKey is the object key of a sprite's manifest of generation gen.
func ManifestKey(sprite string, gen uint64) string {
	return fmt.Sprintf("sprites/%s/gen/%020d.json", sprite, gen)
}

// parseManifestKey is ManifestKey's inverse.
func parseManifestKey(key string) (sprite string, gen uint64, ok bool) {
	rest, ok := strings.CutPrefix(key, "sprites/")
	if !ok {
		return "", 0, false
	}
	sprite, file, ok := strings.Cut(rest, "/gen/")
	if !ok || checkSprite(sprite) != nil {
		return "", 0, false
	}
	num, ok := strings.CutSuffix(file, ".json")
	if !ok || len(num) != 20 {
		return "", 0, false
	}
	if _, err := fmt.Sscanf(num, "%d", &gen); err != nil || fmt.Sprintf("%020d", gen) != num {
		return "", 0, false
	}
	return sprite, gen, true
}

// chunkKey is the object key of the chunk whose uncompressed bytes hash to h.
func chunkKey(h string) string { return "chunks/" + h[:2] + "/" + h }

func parseChunkKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, "chunks/")
	if !ok || len(rest) != 3+64 || rest[2] != '/' || rest[:2] != rest[3:5] || !isHash(rest[3:]) {
		return "", false
	}
	return rest[3:], true
}

func isHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func checkSprite(name string) error {
	if name == "" || len(name) > 128 || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return fmt.Errorf("sprite name %q: %w", name, errdefs.ErrInvalid)
	}
	return nil
}

// checkName refuses a file name that could leave the directory it is
// hydrated into: it must be relative, clean, '/'-separated, without "..".
func checkName(name string) error {
	bad := name == "" || len(name) > maxNameLen || path.IsAbs(name) || path.Clean(name) != name ||
		name == "." || strings.ContainsAny(name, "\\\x00")
	for _, el := range strings.Split(name, "/") {
		if el == ".." || el == "." {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("file name %q: want a clean relative path without '..': %w", name, errdefs.ErrInvalid)
	}
	return nil
}

// checkNames refuses duplicate names and a name that is a directory of
// another ("sleep" beside "sleep/memory").
func checkNames(names []string) error {
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if err := checkName(n); err != nil {
			return err
		}
		if seen[n] {
			return fmt.Errorf("file name %q appears twice: %w", n, errdefs.ErrInvalid)
		}
		seen[n] = true
	}
	for _, n := range names {
		for d := path.Dir(n); d != "."; d = path.Dir(d) {
			if seen[d] {
				return fmt.Errorf("file name %q is also a directory of %q: %w", d, n, errdefs.ErrInvalid)
			}
		}
	}
	return nil
}

// Validate checks everything Hydrate relies on: names, sizes, chunk size,
// one chunk per ChunkSize bytes (the last may be short), hashes in hex.
func (m *Manifest) Validate() error {
	if err := checkSprite(m.Sprite); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if m.ChunkSize < minChunkSize || m.ChunkSize > maxChunkSize {
		return fmt.Errorf("manifest of %s gen %d: chunk size %d out of range: %w", m.Sprite, m.Generation, m.ChunkSize, errdefs.ErrInvalid)
	}
	if len(m.Files) > maxFiles {
		return fmt.Errorf("manifest of %s gen %d: %d files: %w", m.Sprite, m.Generation, len(m.Files), errdefs.ErrInvalid)
	}
	names := make([]string, len(m.Files))
	for i, f := range m.Files {
		names[i] = f.Name
		if f.Size < 0 || f.Size > maxFileSize {
			return fmt.Errorf("manifest of %s gen %d: file %q size %d out of range: %w", m.Sprite, m.Generation, f.Name, f.Size, errdefs.ErrInvalid)
		}
		if f.Mode&^0o777 != 0 {
			return fmt.Errorf("manifest of %s gen %d: file %q mode %#o is not permission bits: %w", m.Sprite, m.Generation, f.Name, f.Mode, errdefs.ErrInvalid)
		}
		want := (f.Size + int64(m.ChunkSize) - 1) / int64(m.ChunkSize)
		if int64(len(f.Chunks)) != want {
			return fmt.Errorf("manifest of %s gen %d: file %q of %d bytes has %d chunks, want %d: %w", m.Sprite, m.Generation, f.Name, f.Size, len(f.Chunks), want, errdefs.ErrInvalid)
		}
		for j, h := range f.Chunks {
			if h != "" && !isHash(h) {
				return fmt.Errorf("manifest of %s gen %d: file %q chunk %d %q is not a hex sha256: %w", m.Sprite, m.Generation, f.Name, j, h, errdefs.ErrInvalid)
			}
		}
	}
	if err := checkNames(names); err != nil {
		return fmt.Errorf("manifest of %s gen %d: %w", m.Sprite, m.Generation, err)
	}
	return nil
}

// DecodeManifest parses and validates a manifest.
func DecodeManifest(data []byte) (Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("manifest: %v: %w", err, errdefs.ErrInvalid)
	}
	if dec.More() {
		return Manifest{}, fmt.Errorf("manifest: data after the object: %w", errdefs.ErrInvalid)
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// Manifest reads and validates the manifest of a sprite's generation:
// errdefs.ErrNotFound when there is none, errdefs.ErrInvalid when it is
// malformed or names another sprite or generation.
func (s *Store) Manifest(ctx context.Context, sprite string, gen uint64) (Manifest, error) {
	if err := checkSprite(sprite); err != nil {
		return Manifest{}, err
	}
	key := ManifestKey(sprite, gen)
	rc, err := s.b.Get(ctx, key)
	if err != nil {
		return Manifest{}, fmt.Errorf("manifest of %s gen %d: %w", sprite, gen, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxManifestBytes+1))
	if err != nil {
		return Manifest{}, fmt.Errorf("manifest of %s gen %d: read: %w: %w", sprite, gen, err, errdefs.ErrUnavailable)
	}
	if len(data) > maxManifestBytes {
		return Manifest{}, fmt.Errorf("manifest of %s gen %d: over %d bytes: %w", sprite, gen, maxManifestBytes, errdefs.ErrInvalid)
	}
	m, err := DecodeManifest(data)
	if err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", key, err)
	}
	if m.Sprite != sprite || m.Generation != gen {
		return Manifest{}, fmt.Errorf("%s: holds %s gen %d: %w", key, m.Sprite, m.Generation, errdefs.ErrInvalid)
	}
	return m, nil
}

// Generations lists the generations of sprite that have a manifest in the
// store, oldest first.
func (s *Store) Generations(ctx context.Context, sprite string) ([]uint64, error) {
	if err := checkSprite(sprite); err != nil {
		return nil, err
	}
	var gens []uint64
	err := s.b.List(ctx, "sprites/"+sprite+"/gen/", func(key string, _ time.Time) error {
		if sp, gen, ok := parseManifestKey(key); ok && sp == sprite {
			gens = append(gens, gen)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("generations of %s: %w", sprite, err)
	}
	slices.Sort(gens)
	return gens, nil
}
