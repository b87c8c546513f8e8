package storage

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

func ficlone(dst, src *os.File) error {
	return unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
}

// openLoop makes the xfs file img of size bytes if there is none, mounts it
// on dir unless it is mounted there, and grows it to size.
func openLoop(ctx context.Context, log *slog.Logger, img, dir string, size int64) error {
	if _, err := os.Stat(img); errors.Is(err, fs.ErrNotExist) {
		if err := makeXFS(ctx, img, size); err != nil {
			return err
		}
		log.Info("storage pool made", "file", img, "size_mib", size>>20)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	dev, err := mountedLoop(img, dir)
	if err != nil {
		return err
	}
	if dev == "" {
		if dev, err = mountLoop(img, dir); err != nil {
			return err
		}
		log.Info("storage pool mounted", "file", img, "dir", dir, "device", dev)
	}
	return growLoop(ctx, log, img, dev, dir, size)
}

// makeXFS makes img, a sparse file of size bytes holding an xfs with
// reflinks. It is made under a temporary name, so img is whole or absent.
func makeXFS(ctx context.Context, img string, size int64) error {
	tmp := img + ".new"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		var out []byte
		out, err = exec.CommandContext(ctx, "mkfs.xfs", "-q", "-m", "reflink=1", tmp).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("mkfs.xfs: %w: %s", err, strings.TrimSpace(string(out)))
		}
	}
	if err == nil {
		err = os.Rename(tmp, img)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// mountLoop attaches img to a free loop device and mounts its xfs on dir.
func mountLoop(img, dir string) (string, error) {
	return MountLoop(img, dir, "xfs", unix.MS_NODEV|unix.MS_NOSUID|unix.MS_NOATIME)
}

// MountLoop attaches img to a free loop device and mounts the filesystem
// of type fstype on it at dir. It uses the loop ioctls rather than `mount
// -o loop`: no external binary, and the autoclear flag is set together with
// the backing file, so unmounting dir detaches the device.
func MountLoop(img, dir, fstype string, flags uintptr) (string, error) {
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer ctl.Close()
	dev, lf, err := attachLoop(ctl, f)
	if err != nil {
		return "", err
	}
	// Autoclear fires when the last opener goes: mount before closing lf.
	err = unix.Mount(dev, dir, fstype, flags, "")
	lf.Close()
	if err != nil {
		return "", fmt.Errorf("mount %s (%s) on %s: %w", img, dev, dir, err)
	}
	return dev, nil
}

// attachLoop binds the file f to a free loop device, autoclear set, and
// returns it open. LOOP_CTL_GET_FREE hands every concurrent caller the
// same device, and a device still being released after an autoclear is
// "free" yet busy: attach one at a time here, and retry a busy device for
// a while (another process may also have taken it).
func attachLoop(ctl, f *os.File) (string, *os.File, error) {
	loopMu.Lock()
	defer loopMu.Unlock()
	for try := range loopTries {
		if try > 0 {
			time.Sleep(time.Duration(min(try, 10)) * time.Millisecond)
		}
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, fmt.Errorf("get free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		lf, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return "", nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if errors.Is(err, unix.EBUSY) {
			lf.Close()
			continue
		}
		if err != nil {
			lf.Close()
			return "", nil, fmt.Errorf("configure %s: %w", dev, err)
		}
		return dev, lf, nil
	}
	return "", nil, fmt.Errorf("no free loop device after %d tries", loopTries)
}

var loopMu sync.Mutex // serializes MountLoop's attach

const loopTries = 300 // about 3 s of retries on a busy device

// growLoop grows img to size bytes if it is smaller, then has the loop
// device dev and the xfs on dir take up the whole file. The last two steps
// run every time (they are no-ops when nothing changed), so a crash between
// the steps is mended at the next start.
func growLoop(ctx context.Context, log *slog.Logger, img, dev, dir string, size int64) error {
	fi, err := os.Stat(img)
	if err != nil {
		return err
	}
	switch {
	case size > fi.Size():
		if err := os.Truncate(img, size); err != nil {
			return fmt.Errorf("grow %s: %w", img, err)
		}
		log.Info("storage pool grown", "file", img, "from_mib", fi.Size()>>20, "to_mib", size>>20)
	case size < fi.Size():
		log.Warn("storage pool cannot shrink; keeping its size", "file", img, "size_mib", fi.Size()>>20, "asked_mib", size>>20)
	}
	lf, err := os.OpenFile(dev, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	err = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_SET_CAPACITY, 0)
	lf.Close()
	if err != nil {
		return fmt.Errorf("resize %s: %w", dev, err)
	}
	if out, err := exec.CommandContext(ctx, "xfs_growfs", "-d", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("xfs_growfs %s: %w: %s", dir, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// mountedLoop returns the loop device of img mounted on dir, or "" when
// nothing is mounted there. Something else mounted there is an error.
func mountedLoop(img, dir string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	dir, dev, fstype := realPath(dir), "", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		a, b := strings.Fields(pre), strings.Fields(post)
		if ok && len(a) >= 5 && len(b) >= 2 && unescape(a[4]) == dir {
			dev, fstype = unescape(b[1]), b[0] // the last mount on dir is on top
		}
	}
	if err := sc.Err(); err != nil || dev == "" {
		return "", err
	}
	if fstype != "xfs" || loopBacking(dev) != realPath(img) {
		return "", fmt.Errorf("%s is mounted on %s (%s), not the pool file", dev, dir, fstype)
	}
	return dev, nil
}

// loopBacking returns the file behind the loop device dev, or "".
func loopBacking(dev string) string {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop/backing_file"))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

func realPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	return p
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
var unescape = strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace
