package meter

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func writeRandom(t *testing.T, path string, n int) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(path)
	f.Sync()
	f.Close()
}

func TestStorage(t *testing.T) {
	dir := t.TempDir()
	own := filepath.Join(dir, "sprite")
	os.Mkdir(own, 0o755)
	base := filepath.Join(dir, "base.img")
	writeRandom(t, base, 4<<20)
	writeRandom(t, filepath.Join(own, "disk.img"), 10<<20)
	// A sparse file holds nothing.
	if f, err := os.Create(filepath.Join(own, "sparse")); err == nil {
		f.Truncate(1 << 30)
		f.Close()
	}
	n, err := Storage([]string{own}, []string{base})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10<<20 || n > 10<<20+1<<20 {
		t.Fatalf("10 MiB written, 1 GiB sparse: %d bytes", n)
	}
	// A reflink copy (where the filesystem has them) adds nothing; a
	// plain copy adds its size.
	cp := exec.Command("cp", "--reflink=always", filepath.Join(own, "disk.img"), filepath.Join(own, "ckpt.img"))
	reflink := cp.Run() == nil
	if !reflink {
		writeRandom(t, filepath.Join(own, "ckpt.img"), 1<<20)
	}
	n2, err := Storage([]string{own}, []string{base})
	if err != nil {
		t.Fatal(err)
	}
	if reflink && n2-n > 64<<10 {
		t.Fatalf("a reflink copy added %d bytes", n2-n)
	}
	if !reflink && (n2-n < 1<<20 || n2-n > 1<<20+64<<10) {
		t.Fatalf("a 1 MiB file added %d bytes", n2-n)
	}
	// Excluding the sprite's own disk leaves the rest.
	if n3, _ := Storage([]string{own}, []string{filepath.Join(own, "disk.img")}); n3 > n2-10<<20+64<<10 {
		t.Fatalf("excluding the disk: %d of %d", n3, n2)
	}
	// Another filesystem mounted inside (a sandbox's disk) is not walked.
	if os.Getuid() == 0 {
		mnt := filepath.Join(own, "rootfs")
		os.Mkdir(mnt, 0o755)
		if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=8m"); err != nil {
			t.Fatal(err)
		}
		defer unix.Unmount(mnt, unix.MNT_DETACH)
		writeRandom(t, filepath.Join(mnt, "inside"), 4<<20)
		if n4, _ := Storage([]string{own}, []string{base}); n4 != n2 {
			t.Fatalf("a mount inside the folder counted: %d, want %d", n4, n2)
		}
	}
	// Missing roots are empty, not errors.
	if n, err := Storage([]string{filepath.Join(dir, "gone")}, nil); n != 0 || err != nil {
		t.Fatalf("missing root: %d %v", n, err)
	}
}

func TestProcess(t *testing.T) {
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var cpu time.Duration
	var epoch string
	deadline := time.Now().Add(30 * time.Second)
	for cpu < 100*time.Millisecond && time.Now().Before(deadline) {
		c, mem, e, err := Process(cmd.Process.Pid, "wisp-none")
		if err != nil {
			t.Fatal(err)
		}
		if mem <= 0 || e == "" {
			t.Fatalf("memory %d epoch %q", mem, e)
		}
		cpu, epoch = c, e
		time.Sleep(20 * time.Millisecond)
	}
	if cpu < 100*time.Millisecond {
		t.Fatalf("a busy loop read %v of CPU", cpu)
	}
	if _, _, e, _ := Process(os.Getpid(), "wisp-none"); e == epoch {
		t.Fatal("two processes share an epoch")
	}
}
