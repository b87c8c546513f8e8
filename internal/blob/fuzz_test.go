package blob

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzManifest: decoding never panics, and what it accepts is safe to
// hydrate: local names, one chunk per ChunkSize bytes, hex hashes.
func FuzzManifest(f *testing.F) {
	h := strings.Repeat("0a", 32)
	f.Add([]byte(`{"sprite":"dev","generation":1,"chunk_size":65536,"files":[{"name":"disk.img","size":65537,"mode":420,"chunks":["` + h + `",""]}]}`))
	f.Add([]byte(`{"sprite":"dev","generation":1,"chunk_size":65536,"files":[{"name":"../x","size":0,"mode":420,"chunks":[]}]}`))
	f.Add([]byte(`{"sprite":"dev","chunk_size":4096,"files":[{"name":"sleep/memory","size":1,"chunks":[""]},{"name":"sleep","size":0}]}`))
	f.Add([]byte(`{"sprite":"a/b","chunk_size":65536}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeManifest(data)
		if err != nil {
			return
		}
		for _, fe := range m.Files {
			if !filepath.IsLocal(fe.Name) || strings.Contains("/"+fe.Name+"/", "/../") {
				t.Fatalf("accepted name %q", fe.Name)
			}
			if int64(len(fe.Chunks)) != (fe.Size+int64(m.ChunkSize)-1)/int64(m.ChunkSize) {
				t.Fatalf("accepted %d chunks for %d bytes", len(fe.Chunks), fe.Size)
			}
			for _, c := range fe.Chunks {
				if c != "" && !isHash(c) {
					t.Fatalf("accepted hash %q", c)
				}
			}
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeManifest(again); err != nil {
			t.Fatalf("re-encoded manifest refused: %v", err)
		}
	})
}
