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

// SyncFiles writes the regular files directly in each of dirs, and the
// folders themselves, to stable storage (fsync each). It does not descend:
// a sprite's folder holds subfolders a guest can write into (its socket
// folder, a sandbox's mounted disk), and nothing there is synced. It never
// follows links, opens nothing but files and folders (non-blocking, so a
// FIFO cannot stall it) and keeps to each folder's filesystem. Entries that
// vanish meanwhile are skipped.
func SyncFiles(dirs ...string) error {
	for _, dir := range dirs {
		if err := syncDir(dir); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	dfd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer syscall.Close(dfd)
	var root syscall.Stat_t
	if err := syscall.Fstat(dfd, &root); err != nil {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue // folders, sockets, pipes, links
		}
		path := filepath.Join(dir, e.Name())
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ELOOP) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		var st syscall.Stat_t
		err = syscall.Fstat(fd, &st)
		if err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFREG && st.Dev == root.Dev {
			err = syscall.Fsync(fd)
		}
		syscall.Close(fd)
		if err != nil {
			return fmt.Errorf("sync %s: %w", path, err)
		}
	}
	if err := syscall.Fsync(dfd); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
