package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// kernelMeta is the package that provides the guest kernel: the cloud
// flavour is small and has what a microVM needs built in.
const kernelMeta = "linux-image-cloud-amd64"

// guestModules are the modules the guest agent loads from the initramfs;
// their dependencies are added from modinfo. Names built into the kernel
// (ext4 in the cloud flavour) are skipped.
var guestModules = []string{
	"virtio", "virtio_ring", "virtio_mmio", "virtio_pci",
	"virtio_blk", "virtio_net", "virtio_console",
	"overlay", "fuse", "ext4",
}

// Kernel is a cached guest kernel.
type Kernel struct {
	Version string // e.g. "6.1.0-28-cloud-amd64"
	Vmlinux string // absolute path to the ELF vmlinux (PVH) cut out of the bzImage
	SHA256  string // hex sha256 of Vmlinux, recorded at fetch time
	Package string // the .deb file name it came from
}

// ModulesDir is the directory holding the kernel's guest modules (<name>.ko).
func (k Kernel) ModulesDir() string { return filepath.Join(filepath.Dir(k.Vmlinux), "modules") }

type kernelRecord struct {
	Version   string    `json:"version"`
	SHA256    string    `json:"sha256"`
	Package   string    `json:"package"`
	FetchedAt time.Time `json:"fetched_at"`
}

// Kernel returns the cached kernel, fetching it when absent or when the
// cached vmlinux does not match its recorded sha256. Progress lines go to progress.
func (s *Store) Kernel(ctx context.Context, progress io.Writer) (Kernel, error) {
	defer s.lock("kernel")()
	metaPath := filepath.Join(s.Dir, "kernel", "meta.json")
	var rec kernelRecord
	if err := readJSON(metaPath, &rec); err == nil {
		k := s.kernelFrom(rec)
		sum, err := fileSHA256(k.Vmlinux)
		if err == nil && sum == rec.SHA256 {
			return k, nil
		}
		s.log().Warn("cached kernel is damaged, fetching again", "version", rec.Version, "err", err)
	} else if !os.IsNotExist(err) {
		s.log().Warn("cached kernel meta unreadable, fetching again", "err", err)
	}

	start := time.Now()
	rec, err := s.fetchKernel(ctx, progress)
	if err != nil {
		return Kernel{}, fmt.Errorf("fetch kernel: %w", err)
	}
	if err := writeJSONAtomic(metaPath, rec); err != nil {
		return Kernel{}, fmt.Errorf("fetch kernel: %w", err)
	}
	s.log().Info("kernel fetched", "version", rec.Version, "package", rec.Package, "took", time.Since(start).Round(time.Millisecond))
	return s.kernelFrom(rec), nil
}

func (s *Store) kernelFrom(rec kernelRecord) Kernel {
	dir, _ := filepath.Abs(filepath.Join(s.Dir, "kernel", rec.Version))
	return Kernel{Version: rec.Version, Vmlinux: filepath.Join(dir, "vmlinux"), SHA256: rec.SHA256, Package: rec.Package}
}

// fetchKernel downloads and unpacks the kernel package in a work dir and
// moves vmlinux and modules to kernel/<version>. The caller records the meta.
func (s *Store) fetchKernel(ctx context.Context, progress io.Writer) (kernelRecord, error) {
	work, err := s.workDir("kernel")
	if err != nil {
		return kernelRecord{}, err
	}
	defer os.RemoveAll(work)

	apt := aptOnce{progress: progress}
	pkg, err := apt.resolve(ctx, kernelMeta, "linux-image-")
	if err != nil {
		return kernelRecord{}, err
	}
	version := strings.TrimPrefix(pkg, "linux-image-")
	fmt.Fprintf(progress, "downloading %s\n", pkg)
	deb, err := apt.download(ctx, work, pkg)
	if err != nil {
		return kernelRecord{}, err
	}
	x := filepath.Join(work, "x")
	if _, err := run(ctx, "", "dpkg-deb", "-x", deb, x); err != nil {
		return kernelRecord{}, err
	}

	out := filepath.Join(work, "out")
	if err := os.MkdirAll(filepath.Join(out, "modules"), 0o755); err != nil {
		return kernelRecord{}, err
	}
	fmt.Fprintf(progress, "extracting vmlinux from vmlinuz-%s\n", version)
	vmlinux := filepath.Join(out, "vmlinux")
	if err := extractVmlinux(ctx, filepath.Join(x, "boot", "vmlinuz-"+version), vmlinux); err != nil {
		return kernelRecord{}, err
	}
	mods, err := copyModules(ctx, filepath.Join(x, "lib", "modules", version), filepath.Join(out, "modules"), guestModules)
	if err != nil {
		return kernelRecord{}, err
	}
	fmt.Fprintf(progress, "modules: %s\n", strings.Join(mods, " "))
	sum, err := fileSHA256(vmlinux)
	if err != nil {
		return kernelRecord{}, err
	}

	dest := filepath.Join(s.Dir, "kernel", version)
	if err := os.RemoveAll(dest); err != nil {
		return kernelRecord{}, err
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return kernelRecord{}, err
	}
	if err := os.Rename(out, dest); err != nil {
		return kernelRecord{}, err
	}
	return kernelRecord{Version: version, SHA256: sum, Package: filepath.Base(deb), FetchedAt: time.Now().UTC()}, nil
}

// lz4Legacy is the magic of the LZ4 legacy frame the kernel's bzImage uses.
var lz4Legacy = []byte{0x02, 0x21, 0x4c, 0x18}

// extractVmlinux finds the LZ4 payload in a bzImage and decompresses it to
// dst. lz4 complains about the bytes that follow the payload; that is fine
// as long as what came out is a whole ELF file.
func extractVmlinux(ctx context.Context, bzImage, dst string) error {
	data, err := os.ReadFile(bzImage)
	if err != nil {
		return err
	}
	var last error
	for off := 0; ; off += len(lz4Legacy) {
		i := bytes.Index(data[off:], lz4Legacy)
		if i < 0 {
			return fmt.Errorf("%s: no LZ4 payload holding an ELF vmlinux (last try: %v)", bzImage, last)
		}
		off += i
		last = lz4Decompress(ctx, data[off:], dst)
		var ee *exec.Error // lz4 not installed
		if last == nil || ctx.Err() != nil || errors.As(last, &ee) {
			return last
		}
	}
}

func lz4Decompress(ctx context.Context, src []byte, dst string) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, "lz4", "-dc")
	cmd.Stdin, cmd.Stdout = bytes.NewReader(src), f
	runErr := cmd.Run()
	if ee := (*exec.Error)(nil); ctx.Err() != nil || errors.As(runErr, &ee) {
		return runErr
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	ef, err := elf.NewFile(f) // also checks the section headers are all there
	if err != nil {
		return fmt.Errorf("lz4 output is not an ELF file: %v (lz4: %v)", err, runErr)
	}
	ef.Close()
	return f.Sync()
}

// copyModules copies the wanted modules and everything they depend on from
// the unpacked /lib/modules/<version> tree to dst as <name>.ko, decompressing
// as needed. It returns the names copied. Built-in modules are skipped; a
// module that is neither a file nor built in is an error.
func copyModules(ctx context.Context, modRoot, dst string, wanted []string) ([]string, error) {
	files := map[string]string{} // name -> path
	err := filepath.WalkDir(filepath.Join(modRoot, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		base := d.Name()
		for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
			if strings.HasSuffix(base, ext) {
				files[modName(strings.TrimSuffix(base, ext))] = p
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(modRoot, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[modName(strings.TrimSuffix(filepath.Base(l), ".ko"))] = true
		}
	}

	var copied []string
	seen := map[string]bool{}
	queue := append([]string(nil), wanted...)
	for len(queue) > 0 {
		name := modName(queue[0])
		queue = queue[1:]
		if seen[name] {
			continue
		}
		seen[name] = true
		src, ok := files[name]
		if !ok {
			if builtin[name] {
				continue
			}
			return nil, fmt.Errorf("module %s: neither a file nor built in under %s", name, modRoot)
		}
		out := filepath.Join(dst, name+".ko")
		if err := decompressModule(ctx, src, out); err != nil {
			return nil, fmt.Errorf("module %s: %w", name, err)
		}
		_, deps, err := readModinfo(out)
		if err != nil {
			return nil, err
		}
		copied = append(copied, name)
		queue = append(queue, deps...)
	}
	return copied, nil
}

// decompressModule writes the uncompressed module src to dst.
func decompressModule(ctx context.Context, src, dst string) error {
	var cmd *exec.Cmd
	switch {
	case strings.HasSuffix(src, ".xz"):
		cmd = exec.CommandContext(ctx, "xz", "-dc", src)
	case strings.HasSuffix(src, ".zst"):
		cmd = exec.CommandContext(ctx, "zstd", "-qdc", src)
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	if cmd != nil {
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = out, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w: %s", cmd, err, tail(stderr.String(), 400))
		}
		return out.Close()
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	var r io.Reader = in
	if strings.HasSuffix(src, ".gz") {
		zr, err := gzip.NewReader(in)
		if err != nil {
			return err
		}
		r = zr
	}
	if _, err := io.Copy(out, r); err != nil {
		return err
	}
	return out.Close()
}

// CachedKernelVersion returns the version of the cached kernel, or "" when
// none has been fetched. It does not verify or fetch.
func (s *Store) CachedKernelVersion() string {
	var rec kernelRecord
	if readJSON(filepath.Join(s.Dir, "kernel", "meta.json"), &rec) != nil {
		return ""
	}
	return rec.Version
}
