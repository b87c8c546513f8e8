package nettest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named namespaces are mounted (as network.NetnsDir;
// this package must not import network, whose tests use it).
const netnsDir = "/var/run/netns"

// inNetns runs fn on a thread of its own inside the namespace at path.
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		ns, err := netns.GetFromPath(path)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", path, err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func lockThread() { runtime.LockOSThread() }

func unmount(path string) { unix.Unmount(path, unix.MNT_DETACH) }

// lockOutside takes the machine-wide lock of the outside namespace.
func lockOutside() (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "wisp-nettest.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
