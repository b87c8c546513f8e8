// Package storage makes and removes the sprites' disks.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// CreateDisk makes dst a writable copy of the root image src, grown to
// sizeGiB (sparse: only written blocks take space) with its ext4 filesystem
// resized to fill it, so the guest sees the full size. The copy is a reflink
// where the filesystem has them and a sparse copy elsewhere. On failure dst
// is removed.
func CreateDisk(ctx context.Context, src, dst string, sizeGiB int) (err error) {
	defer func() {
		if err != nil {
			os.Remove(dst)
		}
	}()
	if err := copyFile(ctx, src, dst); err != nil {
		return err
	}
	size := int64(sizeGiB) << 30
	fi, err := os.Stat(dst)
	if err != nil {
		return err
	}
	if fi.Size() > size {
		return fmt.Errorf("disk of %d GiB is smaller than the image (%d MiB): %w", sizeGiB, fi.Size()>>20, errdefs.ErrInvalid)
	}
	if err := os.Truncate(dst, size); err != nil {
		return diskErr("grow disk", nil, err)
	}
	if out, err := exec.CommandContext(ctx, "resize2fs", "-f", dst).CombinedOutput(); err != nil {
		return diskErr("resize2fs", out, err)
	}
	return nil
}

// CopyFile copies src to dst, a reflink where the filesystem has them and
// a sparse copy elsewhere: the clone to use outside a Pool.
func CopyFile(src, dst string) error { return copyFile(context.Background(), src, dst) }

func copyFile(ctx context.Context, src, dst string) error {
	if out, err := exec.CommandContext(ctx, "cp", "--reflink=auto", "--sparse=always", src, dst).CombinedOutput(); err != nil {
		return diskErr("copy "+src, out, err)
	}
	return nil
}

func diskErr(op string, out []byte, err error) error {
	msg := strings.TrimSpace(string(out))
	if errors.Is(err, syscall.ENOSPC) || strings.Contains(msg, "No space left") {
		return fmt.Errorf("%s: %w: %s", op, errdefs.ErrNoSpace, msg)
	}
	if msg != "" {
		return fmt.Errorf("%s: %w: %s", op, err, msg)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Usage returns the bytes a file really occupies (its allocated blocks).
func Usage(path string) (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}

// SyncTree writes every regular file below dir, and the folders holding
// them, to stable storage (fsync each). It stays on dir's filesystem (a
// sandbox's disk may be mounted inside, with a guest's files in it), never
// follows links and never opens anything but files and folders, so no
// FIFO can block it. Entries that vanish meanwhile are skipped: the tree
// may change under it.
func SyncTree(dir string) error {
	var root syscall.Stat_t
	if err := syscall.Stat(dir, &root); err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil // sockets, pipes, links: nothing to sync
		}
		// O_NONBLOCK: should the entry have become a FIFO since it was
		// listed, opening it must not wait for a writer.
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ELOOP) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		defer syscall.Close(fd)
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			return fmt.Errorf("stat %s: %w", path, err)
		}
		if st.Dev != root.Dev {
			if d.IsDir() {
				return fs.SkipDir // another filesystem mounted here
			}
			return nil
		}
		if mode := st.Mode & syscall.S_IFMT; mode != syscall.S_IFREG && mode != syscall.S_IFDIR {
			return nil
		}
		if err := syscall.Fsync(fd); err != nil {
			return fmt.Errorf("sync %s: %w", path, err)
		}
		return nil
	})
}
