package image

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cavaliergopher/cpio"
)

// fakeKernel makes a kernel dir with a vmlinux and three modules.
func fakeKernel(t *testing.T) Kernel {
	t.Helper()
	dir := t.TempDir()
	mods := filepath.Join(dir, "modules")
	if err := os.MkdirAll(mods, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFakeKO(t, filepath.Join(mods, "virtio_blk.ko"), "name=virtio_blk\x00depends=virtio,virtio_ring\x00")
	writeFakeKO(t, filepath.Join(mods, "virtio_ring.ko"), "name=virtio_ring\x00depends=virtio\x00")
	writeFakeKO(t, filepath.Join(mods, "virtio.ko"), "name=virtio\x00depends=\x00")
	vmlinux := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(vmlinux, []byte("\x7fELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	return Kernel{Version: "6.1.0-0-test", Vmlinux: vmlinux}
}

// readCPIO returns the archive's entries: name -> header and content.
func readCPIO(t *testing.T, path string) (map[string]*cpio.Header, map[string]string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdrs, data := map[string]*cpio.Header{}, map[string]string{}
	r := cpio.NewReader(f)
	for {
		h, err := r.Next()
		if err == io.EOF {
			return hdrs, data
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name], data[h.Name] = h, string(b)
	}
}

func TestInitramfs(t *testing.T) {
	k := fakeKernel(t)
	agent := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(agent, []byte("agent v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Store{Dir: t.TempDir()}
	ctx := context.Background()
	path, err := s.Initramfs(ctx, k, agent)
	if err != nil {
		t.Fatal(err)
	}
	hdrs, data := readCPIO(t, path)
	if h := hdrs["init"]; h == nil || data["init"] != "agent v1" || h.Mode.Perm() != 0o755 || !h.Mode.IsRegular() {
		t.Fatalf("init entry = %+v %q", h, data["init"])
	}
	if got, want := data["modules/order"], "virtio.ko\nvirtio_ring.ko\nvirtio_blk.ko\n"; got != want {
		t.Errorf("modules/order = %q, want %q", got, want)
	}
	for _, m := range []string{"virtio", "virtio_ring", "virtio_blk"} {
		if data["modules/"+m+".ko"][:4] != "\x7fELF" {
			t.Errorf("module %s missing or not ELF", m)
		}
	}
	if h := hdrs["dev"]; h == nil || !h.Mode.IsDir() {
		t.Errorf("dev dir missing")
	}

	// Same inputs: same file. New agent: new file.
	if again, err := s.Initramfs(ctx, k, agent); err != nil || again != path {
		t.Fatalf("second Initramfs = %q, %v; want cached %q", again, err, path)
	}
	if err := os.WriteFile(agent, []byte("agent v2"), 0o644); err != nil {
		t.Fatal(err)
	}
	path2, err := s.Initramfs(ctx, k, agent)
	if err != nil || path2 == path {
		t.Fatalf("rebuilt agent: Initramfs = %q, %v; want a new file", path2, err)
	}
	if _, data := readCPIO(t, path2); data["init"] != "agent v2" {
		t.Fatalf("init = %q", data["init"])
	}
}
