//go:build linux && !amd64

package guest

import "syscall"

// spawn is syscall.ForkExec where spawn_linux_amd64.s has no fast path.
func spawn(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error) {
	return syscall.ForkExec(argv0, argv, attr)
}
