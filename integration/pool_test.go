package integration

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestFullPool: with the storage pool full, create fails with a clear error
// and leaves nothing behind, and the existing sprite and its checkpoint are
// unharmed; once space is back, create works. (Warm snapshots are off: a
// create from one is a reflink and needs next to no space.)
func TestFullPool(t *testing.T) {
	b := backends()[len(backends())-1]
	d := newDaemon(t, b, "--warm-snapshots=false")
	d.ok("create", "p1", "--idle", "never")
	d.ok("exec", "p1", "--", "sh", "-c", "echo precious > /home/sprite/p")
	d.ok("checkpoint", "create", "p1")

	pool := filepath.Join(d.dir, "data", "pool")
	filler := filepath.Join(pool, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	// Allocate until not even 4 KiB is left (root may use reserved blocks).
	var off int64
	for _, chunk := range []int64{64 << 20, 1 << 20, 4 << 10} {
		for syscall.Fallocate(int(f.Fd()), 0, off, chunk) == nil {
			off += chunk
		}
	}
	f.Close()
	var st syscall.Statfs_t
	syscall.Statfs(pool, &st)
	t.Logf("pool filled with %d MiB; %d blocks free", off>>20, st.Bfree)
	t.Cleanup(func() { os.Remove(filler) })

	d.fails("full", "create", "p2")
	if l := d.list(); len(l) != 1 {
		t.Errorf("a failed create on a full pool left sprites: %+v", l)
	}
	if out := d.ok("exec", "p1", "--", "cat", "/home/sprite/p"); out != "precious\n" {
		t.Errorf("existing sprite after the pool filled: %q", out)
	}
	os.Remove(filler)
	d.ok("restore", "p1", "v1")
	if out := d.ok("exec", "p1", "--", "cat", "/home/sprite/p"); out != "precious\n" {
		t.Errorf("checkpoint after the pool filled: %q", out)
	}
	d.ok("create", "p2")
}
