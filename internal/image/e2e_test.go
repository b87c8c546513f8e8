package image

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFetchAndBuild fetches the real kernel, builds an initramfs from it and
// the minimal root image. It needs apt-get and the Debian mirror.
func TestFetchAndBuild(t *testing.T) {
	for _, tool := range []string{"apt-get", "dpkg-deb", "lz4", "mkfs.ext4", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	ctx := t.Context()
	s := &Store{Dir: t.TempDir(), Log: slog.New(slog.NewTextHandler(testWriter{t}, nil))}

	start := time.Now()
	k, err := s.Kernel(ctx, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Kernel: %+v in %v", k, time.Since(start))
	head := make([]byte, 4)
	if f, err := os.Open(k.Vmlinux); err != nil {
		t.Fatal(err)
	} else {
		f.Read(head)
		f.Close()
	}
	if string(head) != "\x7fELF" {
		t.Fatalf("vmlinux starts with %q", head)
	}

	// The cache is used, and a damaged vmlinux is fetched again.
	if again, err := s.Kernel(ctx, testWriter{t}); err != nil || again != k {
		t.Fatalf("cached Kernel = %+v, %v", again, err)
	}
	if err := os.WriteFile(k.Vmlinux, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if again, err := s.Kernel(ctx, testWriter{t}); err != nil || again.SHA256 != k.SHA256 {
		t.Fatalf("refetched Kernel = %+v, %v", again, err)
	}

	start = time.Now()
	initrd, err := s.Initramfs(ctx, k, os.Args[0]) // any binary stands in for the agent
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Initramfs: %s in %v", initrd, time.Since(start))
	_, data := readCPIO(t, initrd)
	order := data["modules/order"]
	t.Logf("modules/order:\n%s", order)
	for _, m := range []string{"virtio.ko", "virtio_ring.ko", "virtio_mmio.ko", "virtio_blk.ko", "virtio_net.ko", "virtio_console.ko", "net_failover.ko"} {
		if !strings.Contains(order, m+"\n") {
			t.Errorf("modules/order lacks %s", m)
		}
	}
	for _, m := range []string{"virtio_pci.ko", "overlay.ko", "fuse.ko"} {
		if strings.Contains(order, m) {
			t.Errorf("modules/order has %s, which boot does not need", m)
		}
	}
	if strings.Index(order, "virtio.ko") > strings.Index(order, "virtio_blk.ko") {
		t.Errorf("virtio after virtio_blk")
	}

	// Two concurrent builds of one image serialise and leave one good image.
	start = time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { _, errs[i] = s.Build(ctx, "minimal", testReport(t)) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("2x Build(minimal) in %v", time.Since(start))
	root, err := s.Root("minimal")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("e2fsck", "-fn", root).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck: %v\n%s", err, out)
	}
	infos, err := s.List()
	if err != nil || !infos[0].Built || infos[0].Path != root || infos[0].SizeBytes < 64<<20 || infos[0].SHA256 == "" {
		t.Fatalf("List = %+v, %v", infos, err)
	}
	if sum, _ := fileSHA256(root); sum != infos[0].SHA256 {
		t.Errorf("image sha256 %s, meta says %s", sum, infos[0].SHA256)
	}
	if out, err := exec.Command("debugfs", "-R", "stat /home/sprite", root).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("User:  1000")) {
		t.Errorf("/home/sprite not owned by 1000: %v\n%s", err, out)
	}
	if out, err := exec.Command("debugfs", "-R", "stat /bin/sh", root).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("Fast link dest: \"busybox\"")) {
		t.Errorf("/bin/sh is not a busybox link: %v\n%s", err, out)
	}
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// testReport sends build progress to the test log.
func testReport(t *testing.T) func(Progress) {
	return func(p Progress) { t.Logf("[%d/%d] %s %d/%d", p.Step, p.Steps, p.Phase, p.Done, p.Total) }
}
