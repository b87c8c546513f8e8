package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/storage"
)

// TestDiskFull: when the filesystem holding a sprite's disk is full, the
// guest's writes fail with an I/O error and the VM runs on (QEMU's default
// pauses it, and its agent answers no more).
func TestDiskFull(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs a tmpfs: root only")
	}
	d, newSpec := fixture(t)
	spec := newSpec(t, "full", 256)
	small := filepath.Join(t.TempDir(), "small")
	os.MkdirAll(small, 0o755)
	if err := unix.Mount("tmpfs", small, "tmpfs", 0, "size=48m,mode=0755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(small, unix.MNT_DETACH) })
	disk := filepath.Join(small, "disk.img")
	if err := storage.CopyFile(spec.Disk, disk); err != nil {
		t.Fatal(err)
	}
	spec.Disk = disk
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	inst, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })

	run := func(script string) (string, proto.Exit, error) {
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		var out strings.Builder
		exit, err := inst.Agent().Exec(ctx, proto.ExecRequest{Argv: []string{"sh", "-c", script}, User: "root"}, agent.ExecIO{Stdout: &out, Stderr: &out})
		return out.String(), exit, err
	}
	// The disk works before it fills.
	if out, exit, err := run("echo before > /probe && sync && cat /probe"); err != nil || out != "before\n" {
		t.Fatalf("write before the disk filled: %+v %v %q", exit, err, out)
	}
	out, exit, err := run("dd if=/dev/zero of=/fill bs=1M count=96 conv=fsync 2>&1")
	t.Logf("96 MiB onto a disk whose host has 48: %+v %v %q", exit, err, out)
	if err != nil {
		t.Fatalf("the guest did not answer while its disk was full: %v", err)
	}
	if exit.Code == 0 || exit.Signal != "" || !strings.Contains(out, "Input/output error") && !strings.Contains(out, "Read-only") {
		t.Errorf("writing past the host's space: %+v %q, want an I/O error", exit, out)
	}
	if out, _, err := run("echo alive"); err != nil || out != "alive\n" {
		t.Errorf("after the disk filled: %q %v", out, err)
	}
}
