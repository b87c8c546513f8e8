package vmm

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// MountLogDir makes dir a tmpfs of LogFSSize bytes, unless it is one
// already (it outlives the daemon, like the VM writing into it). Where
// that is not allowed (not root) it is left a plain folder and the error
// says so.
func MountLogDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.TMPFS_MAGIC {
		return nil
	}
	opts := fmt.Sprintf("size=%d,nr_inodes=16,mode=0700", LogFSSize)
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return fmt.Errorf("mount the log folder %s: %w (its logs are not bounded)", dir, err)
	}
	return nil
}

// RemoveLogDir unmounts the log folder dir and removes it (idempotent).
func RemoveLogDir(dir string) error {
	for {
		err := unix.Unmount(dir, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break // not a mount point (any more)
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	return os.RemoveAll(dir)
}
