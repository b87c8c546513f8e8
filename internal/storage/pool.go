package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Kinds of pool.
const (
	// KindNative: the data dir's own filesystem has reflinks (xfs with
	// reflink=1, btrfs).
	KindNative = "native"
	// KindXFSLoop: a sparse file DATA/pool.img holding an xfs with reflinks,
	// loop-mounted at DATA/pool.
	KindXFSLoop = "xfs-loop"
	// KindCopy: no reflinks to be had; clones are full (sparse) copies.
	KindCopy = "copy"
)

// Pool is the directory where images, sprite disks, memory files and
// checkpoints live, on a filesystem with reflinks where possible, so that a
// Clone costs milliseconds and no space until blocks change.
type Pool struct {
	Root    string // the directory; Clone works within it
	Kind    string // KindNative, KindXFSLoop or KindCopy
	Warning string // why clones are slow, for KindCopy; else ""

	log *slog.Logger
}

// PoolStats is the space of the pool's filesystem. For KindNative and
// KindCopy that filesystem is shared with whatever else is on it.
type PoolStats struct {
	Root, Kind, Warning string
	Size, Used, Free    int64 // bytes; Free is what an unprivileged writer may use
}

// OpenPool makes the pool under dataDir ready and returns it. It is
// idempotent: the daemon calls it at every start.
//
//   - If dataDir's filesystem has reflinks, the pool is dataDir/pool
//     (KindNative).
//   - Else, as root with mkfs.xfs installed, it is an xfs filesystem with
//     reflinks in the sparse file dataDir/pool.img of sizeGiB, loop-mounted
//     at dataDir/pool (KindXFSLoop). The file is made once; it is mounted if
//     it is not (after a host reboot) and grown if sizeGiB is larger than it.
//     It stays mounted when the daemon stops, as sprites keep running.
//   - Else it is the plain directory dataDir/pool (KindCopy), with a Warning.
func OpenPool(ctx context.Context, log *slog.Logger, dataDir string, sizeGiB int) (*Pool, error) {
	if sizeGiB < 1 {
		return nil, fmt.Errorf("pool size %d GiB: %w", sizeGiB, errdefs.ErrInvalid)
	}
	return openPool(ctx, log, dataDir, int64(sizeGiB)<<30)
}

// openPool is OpenPool with the size in bytes (tests make pools under 1 GiB).
func openPool(ctx context.Context, log *slog.Logger, dataDir string, size int64) (*Pool, error) {
	p := &Pool{Root: filepath.Join(dataDir, "pool"), log: log}
	img := filepath.Join(dataDir, "pool.img")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	_, err := os.Stat(img)
	haveImg := err == nil
	_, mkfsErr := exec.LookPath("mkfs.xfs")
	switch {
	case !haveImg && reflinks(dataDir):
		p.Kind = KindNative
	case haveImg || os.Geteuid() == 0 && mkfsErr == nil && emptyDir(p.Root):
		if err := openLoop(ctx, log, img, p.Root, size); err != nil {
			return nil, fmt.Errorf("open pool %s: %w", img, err)
		}
		p.Kind = KindXFSLoop
	default:
		p.Kind = KindCopy
		why := "making an xfs pool needs root"
		if os.Geteuid() == 0 && mkfsErr != nil {
			why = "mkfs.xfs is not installed (apt-get install xfsprogs)"
		} else if os.Geteuid() == 0 {
			// An older copy pool: mounting over it would hide its files.
			why = fmt.Sprintf("%s holds files; move them out and restart to get an xfs pool", p.Root)
		}
		p.Warning = fmt.Sprintf("clones are full copies: %s has no reflinks and %s", dataDir, why)
	}
	if err := os.MkdirAll(p.Root, 0o700); err != nil {
		return nil, err
	}
	if p.Warning != "" {
		log.Warn("storage pool without reflinks", "root", p.Root, "warning", p.Warning)
	} else {
		log.Info("storage pool ready", "root", p.Root, "kind", p.Kind)
	}
	return p, nil
}

// Close releases the pool. An xfs-loop pool stays mounted: sprites keep
// running while the daemon is down.
func (p *Pool) Close() error { return nil }

// Stats returns the size and use of the pool's filesystem.
func (p *Pool) Stats() (PoolStats, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(p.Root, &st); err != nil {
		return PoolStats{}, fmt.Errorf("statfs %s: %w", p.Root, err)
	}
	bs := int64(st.Bsize)
	return PoolStats{
		Root: p.Root, Kind: p.Kind, Warning: p.Warning,
		Size: int64(st.Blocks) * bs,
		Used: int64(st.Blocks-st.Bfree) * bs,
		Free: int64(st.Bavail) * bs,
	}, nil
}

// Clone makes dst a copy of src: a reflink sharing src's blocks until
// either is written, or a sparse copy for KindCopy (and when src is on
// another filesystem). dst must not exist (errdefs.ErrExists); it appears
// whole or not at all. A full pool gives an error wrapping
// errdefs.ErrNoSpace; src is never changed.
func (p *Pool) Clone(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if _, err := os.Lstat(dst); err == nil {
		return p.cloneErr(src, dst, fs.ErrExist)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".clone-*")
	if err != nil {
		return p.cloneErr(src, dst, err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	err = unix.EOPNOTSUPP
	if p.Kind != KindCopy {
		err = ficlone(tmp, in)
		if errors.Is(err, unix.EXDEV) && p.log != nil {
			p.log.Warn("clone across filesystems is a copy", "src", src, "dst", dst)
		}
	}
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EXDEV) {
		err = sparseCopy(tmp, in, fi.Size())
	}
	if err == nil {
		err = tmp.Chmod(fi.Mode().Perm())
	}
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil {
		err = tmp.Close()
	}
	if err == nil {
		// Link, unlike rename, fails if dst appeared meanwhile.
		err = os.Link(tmp.Name(), dst)
	}
	if err != nil {
		return p.cloneErr(src, dst, err)
	}
	return nil
}

func (p *Pool) cloneErr(src, dst string, err error) error {
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("clone %s: %s: %w", src, dst, errdefs.ErrExists)
	}
	if !errors.Is(err, unix.ENOSPC) && !errors.Is(err, unix.EDQUOT) {
		return fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	hint := "remove unused sprites and checkpoints"
	if p.Kind == KindXFSLoop {
		hint = "raise the pool size and restart the daemon (the pool file grows in place), or " + hint
	}
	err = fmt.Errorf("clone %s to %s: storage pool %s is full: %w", src, dst, p.Root, errdefs.ErrNoSpace)
	return errdefs.WithHint(err, hint)
}

// sparseCopy copies the size bytes of src into the empty dst, skipping
// holes so that only src's data takes space.
func sparseCopy(dst, src *os.File, size int64) error {
	for off := int64(0); off < size; {
		data, err := src.Seek(off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			return err
		}
		hole, err := src.Seek(data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		if _, err := src.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := dst.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.CopyN(dst, src, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return dst.Truncate(size)
}

// reflinks reports whether dir's filesystem can clone files.
func reflinks(dir string) bool {
	a, err := os.CreateTemp(dir, ".reflink-probe-*")
	if err != nil {
		return false
	}
	defer os.Remove(a.Name())
	defer a.Close()
	b, err := os.CreateTemp(dir, ".reflink-probe-*")
	if err != nil {
		return false
	}
	defer os.Remove(b.Name())
	defer b.Close()
	if _, err := a.WriteString("probe"); err != nil {
		return false
	}
	return ficlone(b, a) == nil
}

func emptyDir(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return true
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	return err == io.EOF
}

// FreeBytes returns the space an unprivileged writer has left on the
// filesystem holding path.
func FreeBytes(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
