//go:build !linux

package vmm

import "os"

// MountLogDir makes the folder dir; only Linux bounds it.
func MountLogDir(dir string) error { return os.MkdirAll(dir, 0o700) }

// RemoveLogDir removes the log folder dir.
func RemoveLogDir(dir string) error { return os.RemoveAll(dir) }
