package storage

import (
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

var discard = slog.New(slog.DiscardHandler)

func TestCopyPoolClone(t *testing.T) {
	p := &Pool{Root: t.TempDir(), Kind: KindCopy}
	src := filepath.Join(p.Root, "src")
	// Data, a 62 MiB hole, data, and a trailing hole.
	f, err := os.OpenFile(src, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	writeRandom(t, f, 0, 1<<20)
	writeRandom(t, f, 64<<20, 1<<20)
	if err := f.Truncate(128 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()

	dst := filepath.Join(p.Root, "dst")
	if err := p.Clone(src, dst); err != nil {
		t.Fatal(err)
	}
	if sum(t, src) != sum(t, dst) {
		t.Fatal("clone differs from its source")
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 128<<20 || fi.Mode().Perm() != 0o640 {
		t.Errorf("clone has size %d mode %v, want %d 0640", fi.Size(), fi.Mode().Perm(), 128<<20)
	}
	if u, _ := Usage(dst); u > 4<<20 {
		t.Errorf("sparse copy uses %d bytes, want about 2 MiB", u)
	}
	if err := p.Clone(src, dst); !errors.Is(err, errdefs.ErrExists) {
		t.Errorf("clone onto an existing file: %v, want ErrExists", err)
	}
	assertNoTemps(t, p.Root)
}

func TestOpenPoolKeepsPlainPool(t *testing.T) {
	dataDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dataDir, "pool"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "pool", "disk"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := OpenPool(t.Context(), discard, dataDir, 1)
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != KindCopy || p.Warning == "" {
		t.Fatalf("pool over a directory with files: kind %q warning %q, want copy with a warning", p.Kind, p.Warning)
	}
	if _, err := os.Stat(filepath.Join(p.Root, "disk")); err != nil {
		t.Fatal(err)
	}
}

// writeRandom writes n random bytes at off.
func writeRandom(t *testing.T, f *os.File, off, n int64) {
	t.Helper()
	r := rand.NewChaCha8([32]byte{byte(off), byte(n)})
	if _, err := io.Copy(io.NewOffsetWriter(f, off), io.LimitReader(r, n)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func sum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, ".*.clone-*"))
	if len(m) > 0 {
		t.Errorf("temporary files left behind: %v", m)
	}
}
