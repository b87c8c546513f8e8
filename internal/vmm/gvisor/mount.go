package gvisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/storage"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// mountDisk attaches the ext4 image disk to a free loop device and mounts
// it at dir, nodev and nosuid: the host never honours a device node or a
// setuid bit the guest made. (Inside the sandbox the sentry decides on
// setuid bits itself, from the file's mode: runsc --allow-suid.) The loop device is set to autoclear: it detaches itself when
// the last mount of it goes (ours, and the gofer's copy in its own mount
// namespace), so there is nothing to detach by hand.
//
// This uses the loop ioctls rather than `mount -o loop`: no external
// binary, the autoclear flag is set atomically with the backing file, and
// errors come back as errnos.
//
// It returns the loop device's throttle: the sandbox's I/O to its disk
// goes through that device, and its cgroup bounds it (see diskIO).
func mountDisk(disk, dir string) (vmm.DeviceIO, error) {
	dev, err := storage.MountLoop(disk, dir, "ext4", unix.MS_NODEV|unix.MS_NOSUID)
	if err != nil {
		return vmm.DeviceIO{}, err
	}
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return vmm.DeviceIO{}, fmt.Errorf("disk %s on %s: %w", disk, dev, err)
	}
	return vmm.DeviceIO{Major: unix.Major(uint64(st.Rdev)), Minor: unix.Minor(uint64(st.Rdev)),
		ReadBps: diskBps, WriteBps: diskBps, ReadIOPS: diskIOPS, WriteIOPS: diskIOPS}, nil
}

// A sandbox's I/O to its disk, at most: one sprite cannot take the whole
// of the host's disk from the others. (Under cgroup v1 only I/O the
// sandbox submits itself is counted, which covers reads and synced
// writes; buffered writes reach the disk through the host's writeback.)
const (
	diskBps  = 256 << 20
	diskIOPS = 8000
)

// unmountDisk unmounts everything stacked on dir (a crash may leave more
// than one mount) and waits until no loop device is backed by disk any
// more, so the next mount of the image is the only one.
func unmountDisk(ctx context.Context, disk, dir string) error {
	if err := unmountAll(dir); err != nil {
		return err
	}
	for loopBacking(disk) != "" {
		select {
		case <-ctx.Done():
			return fmt.Errorf("disk %s still attached to %s: %w", disk, loopBacking(disk), context.Cause(ctx))
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// loopBacking returns the loop device backed by disk, or "".
func loopBacking(disk string) string {
	if p, err := filepath.EvalSymlinks(disk); err == nil {
		disk = p
	}
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.TrimSuffix(string(b), "\n") == disk {
			return "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(f)))
		}
	}
	return ""
}

// The agent's socket folder is bound into the sandbox read-write (the
// agent must connect to the socket in it), so it is a tmpfs of its own on
// the host, this small: a guest can write a few KiB there, never into the
// pool that holds the disks and wisp.db.
const sockFSOptions = "size=16k,nr_inodes=8,mode=0700"

// mountSockDir mounts the socket folder's tmpfs at dir.
func mountSockDir(dir string) error {
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, sockFSOptions); err != nil {
		return fmt.Errorf("mount the socket folder %s: %w", dir, err)
	}
	return nil
}

// unmountAll unmounts everything stacked on dir (idempotent).
func unmountAll(dir string) error {
	for {
		err := unix.Unmount(dir, 0)
		if errors.Is(err, unix.EBUSY) {
			err = unix.Unmount(dir, unix.MNT_DETACH)
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil // not a mount point (any more)
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
}
