package meter

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Process reads what the host spends on one sprite's VMM or sandbox
// process pid: its own cgroup's CPU time and memory when it has one below
// parent (so a sandbox's helper processes count too), else the process's.
// The epoch is the pid and its start time: a new instance is a new epoch.
func Process(pid int, parent string) (cpu time.Duration, mem int64, epoch string, err error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, "", err
	}
	f, err := statFields(stat)
	if err != nil {
		return 0, 0, "", err
	}
	epoch = strconv.Itoa(pid) + "@" + f[19] // starttime
	groups, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if c, ok := cgroupCPU(groups, parent); ok {
		cpu = c
	} else {
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		cpu = time.Duration(utime+stime) * time.Second / clockTicks
	}
	// Memory is what the instance's processes hold resident, summed over
	// its own cgroup (a sandbox's sentry and gofer): not the cgroup's
	// charge, which also holds the host's page cache of the sprite's disk
	// writes.
	mem, err = processRSS(pid)
	if pids, ok := cgroupProcs(groups, parent); ok {
		mem = 0
		for _, p := range pids {
			if n, err := processRSS(p); err == nil {
				mem += n
			}
		}
	}
	return cpu, mem, epoch, err
}

// cgroupProcs lists the processes of pid's own cgroup below parent (of the
// pids controller, or v2's), at most 64.
func cgroupProcs(groups []byte, parent string) ([]int, bool) {
	for _, dir := range []string{"pids", ""} {
		p, ok := cgroupPath(groups, dir, parent)
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(cgroupRoot, dir, p, "cgroup.procs"))
		if err != nil {
			continue
		}
		var out []int
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil && len(out) < 64 {
				out = append(out, n)
			}
		}
		return out, len(out) > 0
	}
	return nil, false
}

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc.
const clockTicks = 100

// statFields returns /proc/PID/stat's fields after the command (field 3
// is index 0), whose parentheses may hold anything.
func statFields(b []byte) ([]string, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return nil, errors.New("short /proc stat")
	}
	return f, nil
}

// cgroupPath returns the path of pid's cgroup in the v1 hierarchy holding
// controller (or the v2 one when ctl is ""), if it lies below parent.
func cgroupPath(groups []byte, controller, parent string) (string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(groups))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		match := false
		if controller == "" {
			match = parts[0] == "0" && parts[1] == ""
		} else {
			for _, c := range strings.Split(parts[1], ",") {
				match = match || c == controller
			}
		}
		if match && strings.HasPrefix(parts[2], "/"+parent+"/") {
			return parts[2], true
		}
	}
	return "", false
}

const cgroupRoot = "/sys/fs/cgroup"

func cgroupCPU(groups []byte, parent string) (time.Duration, bool) {
	if p, ok := cgroupPath(groups, "cpuacct", parent); ok {
		if v, err := readInt(filepath.Join(cgroupRoot, "cpuacct", p, "cpuacct.usage")); err == nil {
			return time.Duration(v), true
		}
	}
	if p, ok := cgroupPath(groups, "", parent); ok {
		if v, ok := statValue(filepath.Join(cgroupRoot, p, "cpu.stat"), "usage_usec"); ok {
			return time.Duration(v) * time.Microsecond, true
		}
	}
	return 0, false
}

// processRSS is the process's resident memory: anonymous, file and shared
// pages (a VM's RAM is a shared file mapping).
func processRSS(pid int) (int64, error) {
	v, ok := statValue(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
	if !ok {
		return 0, errors.New("no VmRSS")
	}
	return v * 1024, nil
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// statValue reads the number after key in a "key value" file.
func statValue(path, key string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == key {
			v, err := strconv.ParseInt(f[1], 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// Storage returns the bytes that the files below roots hold in their
// filesystem and the files in exclude do not: physical extents are
// collected (FIEMAP) and merged, so a block that several of them share
// (a checkpoint's reflink of a disk) counts once, and blocks shared with
// an image's base disk not at all. Where a filesystem cannot map extents
// a file counts its allocated blocks.
func Storage(roots, exclude []string) (int64, error) {
	var own, base []extent
	var plain int64
	var errs []error
	// An excluded file inside a root is not the sprite's at all (a
	// running VM's RAM file): its blocks, and its dirty pages not yet
	// given blocks, count nowhere.
	skip := make(map[string]bool, len(exclude))
	for _, f := range exclude {
		skip[filepath.Clean(f)] = true
	}
	for _, root := range roots {
		var rootDev uint64
		var st unix.Stat_t
		if err := unix.Stat(root, &st); err == nil {
			rootDev = st.Dev
		}
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() {
				// Stay on the root's filesystem: a sandbox's disk is
				// mounted inside its folder, and its files are in the
				// disk file already.
				var st unix.Stat_t
				if unix.Lstat(path, &st) == nil && st.Dev != rootDev {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() || skip[path] {
				return nil
			}
			ext, blocks, err := fileExtents(path)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			own = append(own, ext...)
			plain += blocks
			return nil
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, f := range exclude {
		ext, _, err := fileExtents(f)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		base = append(base, ext...)
	}
	return plain + size(subtract(merge(own), merge(base))), errors.Join(errs...)
}

// extent is a physical byte range [Start, End).
type extent struct{ Start, End uint64 }

func merge(e []extent) []extent {
	sort.Slice(e, func(i, j int) bool { return e[i].Start < e[j].Start })
	var out []extent
	for _, x := range e {
		if n := len(out); n > 0 && x.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, x.End)
			continue
		}
		out = append(out, x)
	}
	return out
}

// subtract returns a less b; both merged.
func subtract(a, b []extent) []extent {
	var out []extent
	j := 0
	for _, x := range a {
		for j < len(b) && b[j].End <= x.Start {
			j++
		}
		cur := x.Start
		for k := j; k < len(b) && b[k].Start < x.End; k++ {
			if b[k].Start > cur {
				out = append(out, extent{cur, b[k].Start})
			}
			cur = max(cur, b[k].End)
		}
		if cur < x.End {
			out = append(out, extent{cur, x.End})
		}
	}
	return out
}

func size(e []extent) int64 {
	var n uint64
	for _, x := range e {
		n += x.End - x.Start
	}
	return int64(n)
}

// The FIEMAP ioctl (linux/fiemap.h).
const (
	fsIocFiemap       = 0xC020660B
	fiemapExtentLast  = 0x1
	fiemapExtentDelay = 0x4 // delayed allocation: no physical address yet
	fiemapBatch       = 256
)

type fiemapHeader struct {
	Start, Length                  uint64
	Flags, Mapped, Count, Reserved uint32
}

type fiemapExtent struct {
	Logical, Physical, Length uint64
	_                         [2]uint64
	Flags                     uint32
	_                         [3]uint32
}

// fileExtents returns path's physical extents, or (where the filesystem
// has no FIEMAP) none and its allocated bytes. Extents not yet allocated
// count as allocated bytes too.
func fileExtents(path string) ([]extent, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, 0, err
	}
	buf := make([]byte, unsafe.Sizeof(fiemapHeader{})+fiemapBatch*unsafe.Sizeof(fiemapExtent{}))
	hdr := (*fiemapHeader)(unsafe.Pointer(&buf[0]))
	exts := unsafe.Slice((*fiemapExtent)(unsafe.Pointer(&buf[unsafe.Sizeof(fiemapHeader{})])), fiemapBatch)
	var out []extent
	var pending int64
	start := uint64(0)
	for {
		*hdr = fiemapHeader{Start: start, Length: ^uint64(0) - start, Count: fiemapBatch}
		_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0])))
		if e != 0 {
			if e == unix.EOPNOTSUPP || e == unix.ENOTTY || e == unix.EINVAL {
				return nil, st.Blocks * 512, nil
			}
			return nil, 0, fmt.Errorf("fiemap %s: %w", path, e)
		}
		n := int(hdr.Mapped)
		if n == 0 {
			return out, pending, nil
		}
		for _, x := range exts[:n] {
			if x.Flags&fiemapExtentDelay != 0 {
				pending += int64(x.Length)
			} else {
				out = append(out, extent{x.Physical, x.Physical + x.Length})
			}
			if x.Flags&fiemapExtentLast != 0 {
				return out, pending, nil
			}
		}
		last := exts[n-1]
		start = last.Logical + last.Length
	}
}
