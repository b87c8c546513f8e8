package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// baseIndex is the chunk hashes of a local file, cached in the store's
// cache directory for as long as the file's size, mtime and inode stay.
type baseIndex struct {
	Path      string   `json:"path"`
	Size      int64    `json:"size"`
	MtimeNs   int64    `json:"mtime_ns"`
	Inode     uint64   `json:"inode"`
	ChunkSize int      `json:"chunk_size"`
	Chunks    []string `json:"chunks"`
}

// openBase opens a base file and returns its chunk hashes ("" for zeros),
// from the cache when it is current.
func (s *Store) openBase(ctx context.Context, p string, cs int) (*os.File, []string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s: not a regular file", p)
	}
	abs, _ := filepath.Abs(p)
	want := baseIndex{Path: abs, Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano(), Inode: inode(fi), ChunkSize: cs}
	var cacheFile string
	if s.cacheDir != "" {
		sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d", abs, cs))
		cacheFile = filepath.Join(s.cacheDir, "index-"+hex.EncodeToString(sum[:12])+".json")
		if data, err := os.ReadFile(cacheFile); err == nil {
			var got baseIndex
			if json.Unmarshal(data, &got) == nil && got.Path == want.Path && got.Size == want.Size &&
				got.MtimeNs == want.MtimeNs && got.Inode == want.Inode && got.ChunkSize == cs &&
				int64(len(got.Chunks)) == (got.Size+int64(cs)-1)/int64(cs) {
				return f, got.Chunks, nil
			}
		}
	}
	want.Chunks = make([]string, (want.Size+int64(cs)-1)/int64(cs))
	var st counters
	if err := s.scanChunks(ctx, f, want.Size, cs, &st, func(c chunk) error {
		want.Chunks[c.index] = c.hash
		return nil
	}); err != nil {
		f.Close()
		return nil, nil, err
	}
	if cacheFile != "" {
		if err := writeCache(cacheFile, want); err != nil {
			s.log.Warn("cannot cache chunk index", "path", p, "err", err)
		}
	}
	return f, want.Chunks, nil
}

// writeCache writes the index aside and renames it into place; a cache
// needs no fsync: a torn one is recomputed.
func writeCache(file string, idx baseIndex) error {
	data, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".index-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}
