package sprite

import (
	"os"
	"path/filepath"
	"testing"
)

// TestTemplateManifest: a warm snapshot passes its check as written, and
// fails it when a file is missing, added, cut short or changed.
func TestTemplateManifest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(dir string) error
	}{
		{"intact", func(string) error { return nil }},
		{"missing", func(dir string) error { return os.Remove(filepath.Join(dir, "state", "device")) }},
		{"added", func(dir string) error { return os.WriteFile(filepath.Join(dir, "state", "extra"), nil, 0o600) }},
		{"truncated", func(dir string) error { return os.Truncate(filepath.Join(dir, "disk.img"), 1<<20) }},
		{"changed", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "state", "state.json"), []byte(`{"qemu":"9.9.9"}`), 0o600)
		}},
		{"no manifest", func(dir string) error { return os.Remove(filepath.Join(dir, manifestFile)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, "state"), 0o700)
			for name, size := range map[string]int64{"disk.img": 64 << 20, "state/memory": 32 << 20} {
				f, _ := os.Create(filepath.Join(dir, name))
				f.Truncate(size)
				f.Close()
			}
			os.WriteFile(filepath.Join(dir, "state", "device"), []byte("stream"), 0o600)
			os.WriteFile(filepath.Join(dir, "state", "state.json"), []byte(`{"qemu":"7.2.22"}`), 0o600)
			if err := writeManifest(dir); err != nil {
				t.Fatal(err)
			}
			if err := tc.damage(dir); err != nil {
				t.Fatal(err)
			}
			err := checkManifest(dir)
			if (tc.name == "intact") != (err == nil) {
				t.Errorf("check: %v", err)
			}
		})
	}
}
