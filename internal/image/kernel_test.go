package image

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestExtractVmlinux(t *testing.T) {
	if _, err := exec.LookPath("lz4"); err != nil {
		t.Skip("needs lz4")
	}
	dir := t.TempDir()
	ko := filepath.Join(dir, "x.ko") // any whole ELF file stands in for vmlinux
	writeFakeKO(t, ko, "name=x\x00"+strings.Repeat("padding", 1000))
	elfData, _ := os.ReadFile(ko)
	cmd := exec.Command("lz4", "-l", "-c")
	cmd.Stdin = bytes.NewReader(elfData)
	payload, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	// A decoy magic before the payload and garbage after it, like a bzImage.
	bz := slices.Concat([]byte("MZ setup code"), lz4Legacy, []byte("not lz4"), payload, bytes.Repeat([]byte{0xff}, 300))
	bzPath := filepath.Join(dir, "vmlinuz")
	os.WriteFile(bzPath, bz, 0o644)

	out := filepath.Join(dir, "vmlinux")
	if err := extractVmlinux(t.Context(), bzPath, out); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, elfData) {
		t.Fatalf("vmlinux = %d bytes, want the %d-byte ELF", len(got), len(elfData))
	}
	os.WriteFile(bzPath, []byte("no payload here"), 0o644)
	if err := extractVmlinux(t.Context(), bzPath, out); err == nil {
		t.Fatal("want error for a bzImage without payload")
	}
}

func TestCopyModules(t *testing.T) {
	modRoot := t.TempDir()
	kdir := filepath.Join(modRoot, "kernel", "drivers")
	os.MkdirAll(kdir, 0o755)
	writeFakeKO(t, filepath.Join(kdir, "virtio_blk.ko"), "name=virtio_blk\x00depends=virtio,jbd2\x00")
	writeFakeKO(t, filepath.Join(kdir, "virtio.ko"), "name=virtio\x00depends=\x00")
	writeFakeKO(t, filepath.Join(kdir, "unused.ko"), "name=unused\x00depends=\x00")
	if _, err := exec.LookPath("xz"); err == nil { // a compressed module is unpacked
		writeFakeKO(t, filepath.Join(kdir, "fuse.ko"), "name=fuse\x00depends=\x00")
		if out, err := exec.Command("xz", filepath.Join(kdir, "fuse.ko")).CombinedOutput(); err != nil {
			t.Fatalf("xz: %v %s", err, out)
		}
	} else {
		writeFakeKO(t, filepath.Join(kdir, "fuse.ko"), "name=fuse\x00depends=\x00")
	}
	os.WriteFile(filepath.Join(modRoot, "modules.builtin"), []byte("kernel/fs/ext4/ext4.ko\nkernel/fs/jbd2/jbd2.ko\n"), 0o644)

	dst := t.TempDir()
	got, err := copyModules(t.Context(), modRoot, dst, []string{"virtio_blk", "fuse", "ext4"})
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.Join(got, " "); s != "virtio_blk fuse virtio" {
		t.Fatalf("copied %q", s)
	}
	if name, _, err := readModinfo(filepath.Join(dst, "fuse.ko")); err != nil || name != "fuse" {
		t.Fatalf("fuse.ko: %q %v", name, err)
	}
	if _, err := copyModules(t.Context(), modRoot, t.TempDir(), []string{"nosuch"}); err == nil {
		t.Fatal("want error for a module that is neither a file nor built in")
	}
}
