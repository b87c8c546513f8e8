package vmm

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Inspect reports the confinement of process pid from /proc and its
// cgroup files on this host.
func Inspect(pid int) (Confinement, error) { return HostCgroups.Inspect(pid) }

// Inspect reports the confinement of process pid, its cgroups read in c.
func (c Cgroups) Inspect(pid int) (Confinement, error) {
	cf := Confinement{Pid: pid}
	proc := fmt.Sprintf("/proc/%d", pid)
	status, err := os.ReadFile(proc + "/status")
	if err != nil {
		return cf, fmt.Errorf("inspect pid %d: %w", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "Uid":
			if len(f) > 1 {
				cf.UID, _ = strconv.Atoi(f[1])
			}
		case "Gid":
			if len(f) > 1 {
				cf.GID, _ = strconv.Atoi(f[1])
			}
		case "Seccomp":
			cf.Seccomp = f[0] == "2"
		case "NoNewPrivs":
			cf.NoNewPrivs = f[0] == "1"
		}
	}
	cf.Root, _ = os.Readlink(proc + "/root")
	own, _ := os.Readlink("/proc/self/ns/mnt")
	theirs, _ := os.Readlink(proc + "/ns/mnt")
	cf.OwnMountNS = theirs != "" && theirs != own

	cgs, err := os.ReadFile(proc + "/cgroup")
	if err != nil {
		return cf, fmt.Errorf("inspect pid %d: %w", pid, err)
	}
	paths := map[string]string{} // controller -> path
	for _, line := range strings.Split(strings.TrimSpace(string(cgs)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			paths[""] = parts[2]
			continue
		}
		for _, ctl := range strings.Split(parts[1], ",") {
			paths[ctl] = parts[2]
		}
	}
	file := func(ctl, name string) string {
		root, v2 := c.hierarchy(ctl)
		if root == "" {
			return ""
		}
		p := paths[v1Name(ctl)]
		if v2 {
			p = paths[""]
		}
		b, err := os.ReadFile(filepath.Join(root, p, name))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	cf.CgroupVersion = c.Version("pids")
	cf.Cgroup = paths["pids"]
	if cf.CgroupVersion == 2 {
		cf.Cgroup = paths[""]
	}
	num := func(s string) int64 {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0 // "max", or none
		}
		return n
	}
	cf.PidsMax = num(file("pids", "pids.max"))
	if c.Version("memory") == 2 {
		cf.MemoryMax = num(file("memory", "memory.max"))
	} else if n := num(file("memory", "memory.limit_in_bytes")); n > 0 && n < 1<<62 {
		cf.MemoryMax = n // v1 says "no limit" with a huge number
	}
	if c.Version("cpu") == 2 {
		if s := file("cpu", "cpu.max"); !strings.HasPrefix(s, "max") {
			cf.CPUMax = s
		}
	} else if q := num(file("cpu", "cpu.cfs_quota_us")); q > 0 {
		cf.CPUMax = fmt.Sprintf("%d %s", q, file("cpu", "cpu.cfs_period_us"))
	}
	if c.Version("io") == 2 {
		for _, l := range strings.Split(file("io", "io.max"), "\n") {
			if l != "" {
				cf.IOMax = append(cf.IOMax, l)
			}
		}
	} else {
		cf.IOMax = v1IOMax(func(name string) string { return file("io", name) })
	}
	return cf, nil
}

// v1IOMax folds the four blkio.throttle files into io.max's lines.
func v1IOMax(read func(name string) string) []string {
	type dev struct{ kv []string }
	var order []string
	devs := map[string]*dev{}
	for _, f := range []struct{ file, key string }{
		{"blkio.throttle.read_bps_device", "rbps"}, {"blkio.throttle.write_bps_device", "wbps"},
		{"blkio.throttle.read_iops_device", "riops"}, {"blkio.throttle.write_iops_device", "wiops"},
	} {
		for _, l := range strings.Split(read(f.file), "\n") {
			d, v, ok := strings.Cut(strings.TrimSpace(l), " ")
			if !ok {
				continue
			}
			if devs[d] == nil {
				devs[d] = &dev{}
				order = append(order, d)
			}
			devs[d].kv = append(devs[d].kv, f.key+"="+v)
		}
	}
	var out []string
	for _, d := range order {
		out = append(out, d+" "+strings.Join(devs[d].kv, " "))
	}
	return out
}
