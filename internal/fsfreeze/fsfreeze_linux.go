// Package fsfreeze freezes and thaws a mounted filesystem (FIFREEZE,
// FITHAW): dirty data is written and writers wait until the thaw. The guest
// agent freezes a VM's root with it, the gVisor driver a sandbox's host
// mount.
package fsfreeze

import "golang.org/x/sys/unix"

// The ioctls, _IOWR('X', 119/120, int); x/sys/unix lacks them.
const (
	fiFreeze = 0xC0045877
	fiThaw   = 0xC0045878
)

// Freeze freezes the filesystem of the open file or directory fd.
func Freeze(fd int) error { return unix.IoctlSetInt(fd, fiFreeze, 0) }

// Thaw thaws it; EINVAL means it was not frozen.
func Thaw(fd int) error { return unix.IoctlSetInt(fd, fiThaw, 0) }
