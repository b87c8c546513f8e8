package qemu

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wisp-sh/wisp/internal/image/imagetest"
	"github.com/wisp-sh/wisp/internal/storage"
	"github.com/wisp-sh/wisp/internal/vmm"
	"github.com/wisp-sh/wisp/internal/vmm/conformance"
)

func TestArgv(t *testing.T) {
	spec := vmm.Spec{ID: "abc", Name: "dev", Dir: "/d", CPUs: 2, MemoryMiB: 512, Disk: "/d/disk", Kernel: "/k", Initrd: "/i", MAC: "52:54:00:00:00:01"}
	d := &Driver{Accel: "tcg", Sandbox: true, TSCKHz: 2100000, RunAs: "nobody"}
	a := strings.Join(d.Argv(spec), " ")
	for _, want := range []string{
		"-M microvm,accel=tcg,memory-backend=mem",
		"memory-backend-file,id=mem,size=512M,mem-path=/d/memory,share=on",
		"-smp 2", "wisp_name=dev", "virtserialport,chardev=agent,name=wisp.agent",
		"-sandbox on,obsolete=deny,elevateprivileges=allow,spawn=deny", "tsc_early_khz=2100000", "-runas nobody", "mac=52:54:00:00:00:01", "-pidfile /d/qemu.pid",
	} {
		if !strings.Contains(a, want) {
			t.Errorf("argv lacks %q:\n%s", want, a)
		}
	}
	if strings.Contains(a, "-cpu host") {
		t.Error("tcg argv asks for -cpu host")
	}
	kvm := strings.Join((&Driver{Accel: "kvm", Sandbox: true, TSCKHz: 2100000}).Argv(spec), " ")
	if !strings.Contains(kvm, "-cpu host") || strings.Contains(kvm, "tsc_early_khz") || !strings.Contains(kvm, "elevateprivileges=deny") {
		t.Errorf("kvm argv: %s", kvm)
	}
}

func TestConformance(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed (run `make deps`)")
	}
	fx := imagetest.Need(t)
	d := New(slog.New(slog.NewTextHandler(os.Stderr, nil)), Detect("qemu-system-x86_64"), "nobody")
	n := 0
	conformance.Run(t, conformance.Fixture{
		Driver: d,
		NewSpec: func(t *testing.T, name string) vmm.Spec {
			n++
			dir, err := os.MkdirTemp("", "wq")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			disk := filepath.Join(dir, "disk.img")
			if err := storage.CreateDisk(context.Background(), fx.Root, disk, 1); err != nil {
				t.Fatal(err)
			}
			return vmm.Spec{ID: fmt.Sprintf("t%d%d", os.Getpid(), n), Name: name, Dir: dir, CPUs: 1, MemoryMiB: 256,
				Disk: disk, DiskGiB: 1, Kernel: fx.Kernel.Vmlinux, Initrd: fx.Initrd, MAC: fmt.Sprintf("52:54:00:12:34:%02x", n)}
		},
	})
}
