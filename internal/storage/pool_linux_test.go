package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// loopPool opens an xfs-loop pool of size bytes in a new data dir and
// unmounts it (freeing its loop device) when the test ends.
func loopPool(t testing.TB, size int64) (*Pool, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("an xfs-loop pool needs root")
	}
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		t.Skip("mkfs.xfs not installed (apt-get install xfsprogs)")
	}
	dataDir := t.TempDir()
	t.Cleanup(func() { unmountPool(t, dataDir) })
	p, err := openPool(context.Background(), discard, dataDir, size)
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != KindXFSLoop {
		t.Fatalf("pool on %s is %q, want %q", dataDir, p.Kind, KindXFSLoop)
	}
	return p, dataDir
}

// unmountPool unmounts dataDir's pool and waits until its loop device is gone.
func unmountPool(t testing.TB, dataDir string) {
	t.Helper()
	img := realPath(filepath.Join(dataDir, "pool.img"))
	for unix.Unmount(filepath.Join(dataDir, "pool"), 0) == nil {
	}
	for deadline := time.Now().Add(10 * time.Second); loopOf(img) != ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("%s still attached to %s", img, loopOf(img))
			return
		}
	}
}

// loopOf returns the loop device backed by file, or "".
func loopOf(file string) string {
	devs, _ := filepath.Glob("/sys/block/loop*")
	for _, d := range devs {
		if loopBacking(d) == file {
			return "/dev/" + filepath.Base(d)
		}
	}
	return ""
}

func used(t *testing.T, p *Pool) int64 {
	t.Helper()
	unix.Sync() // settle delayed allocation
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st.Used
}

func TestLoopPoolClone(t *testing.T) {
	p, _ := loopPool(t, 2<<30)
	src, dst := filepath.Join(p.Root, "src"), filepath.Join(p.Root, "dst")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	writeRandom(t, f, 0, 256<<20)
	f.Close()
	srcSum := sum(t, src)

	before := used(t, p)
	if err := p.Clone(src, dst); err != nil {
		t.Fatal(err)
	}
	cloned := used(t, p)
	if d := cloned - before; d > 4<<20 {
		t.Errorf("a clone of 256 MiB took %d KiB of the pool, want it to share its blocks", d>>10)
	}
	if sum(t, dst) != srcSum {
		t.Fatal("clone differs from its source")
	}
	assertNoTemps(t, p.Root)

	// Writing 10 MB into the clone costs 10 MB, and leaves the source be.
	f, err = os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := strings.NewReader(strings.Repeat("w", 10_000_000))
	if _, err := io.Copy(io.NewOffsetWriter(f, 50<<20), r); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	f.Close()
	written := used(t, p)
	if d := written - cloned; d < 9_000_000 || d > 16<<20 {
		t.Errorf("writing 10 MB into a clone took %d KiB of the pool, want about 10 MB", d>>10)
	}
	if sum(t, src) != srcSum {
		t.Error("writing into the clone changed its source")
	}
	t.Logf("pool used: clone +%d KiB, 10 MB written +%d KiB", (cloned-before)>>10, (written-cloned)>>10)

	// A data dir on a filesystem with reflinks gets a native pool.
	native, err := OpenPool(t.Context(), discard, filepath.Join(p.Root, "data"), 1)
	if err != nil {
		t.Fatal(err)
	}
	if native.Kind != KindNative {
		t.Errorf("pool on xfs is %q, want %q", native.Kind, KindNative)
	}
}

func TestLoopPoolReopen(t *testing.T) {
	p, dataDir := loopPool(t, 512<<20)
	file := filepath.Join(p.Root, "disk")
	if err := os.WriteFile(file, []byte("kept"), 0o600); err != nil {
		t.Fatal(err)
	}
	reopen := func(what string) {
		t.Helper()
		q, err := openPool(t.Context(), discard, dataDir, 512<<20)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if q.Kind != KindXFSLoop || q.Root != p.Root {
			t.Fatalf("%s: pool %s %q, want %s %q", what, q.Root, q.Kind, p.Root, KindXFSLoop)
		}
		if b, err := os.ReadFile(file); err != nil || string(b) != "kept" {
			t.Fatalf("%s: file in pool: %q, %v", what, b, err)
		}
		if n := mounts(t, p.Root); n != 1 {
			t.Fatalf("%s: %d mounts on %s, want 1", what, n, p.Root)
		}
	}
	reopen("daemon restart")
	unmountPool(t, dataDir) // host reboot
	if n := mounts(t, p.Root); n != 0 {
		t.Fatalf("%d mounts on %s after unmount", n, p.Root)
	}
	reopen("after reboot")
}

func mounts(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), " "+realPath(dir)+" ")
}

func TestLoopPoolGrow(t *testing.T) {
	p, dataDir := loopPool(t, 512<<20)
	small, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPool(t.Context(), discard, dataDir, 1); err != nil {
		t.Fatal(err)
	}
	big, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if big.Size-small.Size < 400<<20 {
		t.Errorf("growing the pool from 512 MiB to 1 GiB took its filesystem from %d to %d MiB", small.Size>>20, big.Size>>20)
	}
}

func TestLoopPoolFull(t *testing.T) {
	p, _ := loopPool(t, 512<<20)
	src := filepath.Join(p.Root, "src")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	writeRandom(t, f, 0, 64<<20)
	f.Close()
	srcSum := sum(t, src)

	// A clone needs next to no space, so fill the pool until not even a
	// file can be made, reading the space that closing frees each time.
	var outside string
	for i := 0; ; i++ {
		fill, err := os.Create(filepath.Join(p.Root, fmt.Sprint("fill", i)))
		if errors.Is(err, unix.ENOSPC) {
			break
		}
		if err != nil || i == 100 {
			t.Fatalf("filling the pool: %v after %d files", err, i)
		}
		_, err = io.Copy(fill, io.LimitReader(zeros{}, 1<<30))
		fill.Close()
		if !errors.Is(err, unix.ENOSPC) {
			t.Fatalf("filling the pool: %v, want ENOSPC", err)
		}
		if i == 0 {
			// First, while a file can still be made: a copy from outside
			// the pool fails part way.
			outside = filepath.Join(t.TempDir(), "outside")
			cp(t, src, outside)
			assertNoSpace(t, p, outside, filepath.Join(p.Root, "copied"))
		}
	}
	assertNoSpace(t, p, src, filepath.Join(p.Root, "cloned"))
	if sum(t, src) != srcSum || sum(t, outside) != srcSum {
		t.Error("source changed")
	}
}

func assertNoSpace(t *testing.T, p *Pool, src, dst string) {
	t.Helper()
	err := p.Clone(src, dst)
	if !errors.Is(err, errdefs.ErrNoSpace) || errdefs.Hint(err) == "" {
		t.Fatalf("clone into a full pool: %v (hint %q), want ErrNoSpace with a hint", err, errdefs.Hint(err))
	}
	t.Logf("%v; hint: %s", err, errdefs.Hint(err))
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed clone left dst: %v", err)
	}
	assertNoTemps(t, p.Root)
}

func cp(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// BenchmarkLoopPoolClone clones a 1 GiB file full of data (fsync included).
func BenchmarkLoopPoolClone(b *testing.B) {
	p, _ := loopPool(b, 2<<30)
	src := filepath.Join(p.Root, "src")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, io.LimitReader(zeros{}, 1<<30)); err != nil {
		b.Fatal(err)
	}
	f.Sync() // else the first clone pays for writing the file back
	f.Close()
	dst := filepath.Join(p.Root, "dst")
	for b.Loop() {
		if err := p.Clone(src, dst); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.Remove(dst)
		b.StartTimer()
	}
}
