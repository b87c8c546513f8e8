package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cavaliergopher/cpio"
)

// initramfsFormat is part of the cache key; bump it when the layout changes.
const initramfsFormat = "2"

// Initramfs returns the path of an uncompressed newc cpio initramfs holding
//
//	/init              the agent binary at agentPath (mode 0755)
//	/modules/<name>.ko the kernel's guest modules
//	/modules/order     module file names in load order, dependencies first
//
// /dev/console is not needed: the kernel's built-in initramfs provides it.
// The file name carries a hash of the agent's bytes and the kernel version, so
// a rebuilt agent yields a new initramfs; an existing one is reused.
// Uncompressed because under TCG the kernel decompresses slowly, and QEMU
// loads the file quickly.
func (s *Store) Initramfs(ctx context.Context, k Kernel, agentPath string) (string, error) {
	agent, err := os.ReadFile(agentPath)
	if err != nil {
		return "", fmt.Errorf("initramfs: agent: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", initramfsFormat, k.Version)
	h.Write(agent)
	key := hex.EncodeToString(h.Sum(nil))[:16]

	dir := filepath.Join(s.Dir, "initramfs")
	path := filepath.Join(dir, "initramfs-"+key+".cpio")
	defer s.lock("initramfs/" + key)()
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	start := time.Now()
	f, err := os.CreateTemp(dir, ".initramfs-*.tmp")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name()) // no-op after the rename
	err = writeInitramfs(f, agent, k.ModulesDir())
	if err == nil {
		err = f.Chmod(0o644) // QEMU may run as another user
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return "", fmt.Errorf("initramfs: %w", err)
	}
	s.log().Info("initramfs built", "path", path, "kernel", k.Version, "took", time.Since(start).Round(time.Millisecond))
	return path, nil
}

// bootModules are loaded at boot, with their dependencies: the microVM's
// virtio-mmio transport and its disk, network and agent-channel devices.
// The kernel cache keeps the other guest modules (fuse, overlay, virtio_pci).
var bootModules = []string{"virtio_mmio", "virtio_blk", "virtio_net", "virtio_console"}

// writeInitramfs writes the cpio archive. Modules come from modDir (*.ko,
// uncompressed); their order is computed from modinfo.
func writeInitramfs(w io.Writer, agent []byte, modDir string) error {
	if _, err := os.Stat(modDir); err != nil {
		return fmt.Errorf("kernel modules: %w", err)
	}
	paths, err := filepath.Glob(filepath.Join(modDir, "*.ko"))
	if err != nil {
		return err
	}
	deps := map[string][]string{}
	file := map[string]string{} // module name -> path
	for _, p := range paths {
		name, d, err := readModinfo(p)
		if err != nil {
			return err
		}
		deps[name], file[name] = d, p
	}
	order, err := orderModules(deps)
	if err != nil {
		return err
	}
	// Only what boot needs goes in: every module costs boot time under TCG.
	need := map[string]bool{}
	var want func(string)
	want = func(m string) {
		if _, ok := deps[m]; !ok || need[m] {
			return
		}
		need[m] = true
		for _, d := range deps[m] {
			want(d)
		}
	}
	for _, m := range bootModules {
		want(m)
	}
	order = slices.DeleteFunc(order, func(m string) bool { return !need[m] })

	cw := cpio.NewWriter(w)
	mtime := time.Unix(0, 0) // reproducible output
	add := func(name string, mode cpio.FileMode, data []byte) error {
		hdr := &cpio.Header{Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime, Links: 1}
		if mode&cpio.TypeDir != 0 {
			hdr.Links = 2
		}
		if err := cw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := cw.Write(data)
		return err
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "modules"} {
		if err := add(d, cpio.TypeDir|0o755, nil); err != nil {
			return err
		}
	}
	if err := add("init", cpio.TypeReg|0o755, agent); err != nil {
		return err
	}
	var list strings.Builder
	for _, name := range order {
		b, err := os.ReadFile(file[name])
		if err != nil {
			return err
		}
		if err := add("modules/"+name+".ko", cpio.TypeReg|0o644, b); err != nil {
			return err
		}
		list.WriteString(name + ".ko\n")
	}
	if err := add("modules/order", cpio.TypeReg|0o644, []byte(list.String())); err != nil {
		return err
	}
	return cw.Close()
}
