package sprite

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/wisp-sh/wisp/internal/vmm/vmmtest"
)

// The first create of a size makes one sized base disk; later creates of
// that size clone it; ForgetImage removes it.
func TestBaseDisks(t *testing.T) {
	dir := t.TempDir()
	m := newManager(t, dir, &vmmtest.Driver{})
	defer m.Close()
	ctx := context.Background()
	var clones int
	clone := m.opt.Clone
	m.opt.Clone = func(src, dst string) error { clones++; return clone(src, dst) }
	for _, n := range []string{"a", "b"} {
		if _, err := m.Create(ctx, CreateOptions{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Create(ctx, CreateOptions{Name: "c", DiskGiB: 2}); err != nil {
		t.Fatal(err)
	}
	bases, _ := filepath.Glob(filepath.Join(dir, "disks", "minimal-*.img"))
	if len(bases) != 2 || clones != 3 {
		t.Fatalf("bases %v, %d clones; want 2 bases (1 and 2 GiB), 3 clones", bases, clones)
	}
	rec, _ := m.Get("c")
	if fi, err := os.Stat(m.DiskPath(rec)); err != nil || fi.Size() != 2<<30 {
		t.Errorf("disk of c: %v %v", fi, err)
	}
	m.ForgetImage("minimal")
	if bases, _ := filepath.Glob(filepath.Join(dir, "disks", "*")); len(bases) != 0 {
		t.Errorf("after ForgetImage: %v", bases)
	}
}
