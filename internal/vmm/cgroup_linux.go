package vmm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// CgroupParent is the cgroup (path below each hierarchy's root) that holds
// every sprite's: runsc makes "/wisp/wisp-ID" for a sandbox, and QEMU
// drivers "/wisp/qemu-ID".
const CgroupParent = "wisp"

// Limits are what one sprite's VMM or sandbox may take of the host, set
// in its cgroup. A zero field sets nothing.
type Limits struct {
	Tasks       int   // pids.max: processes and threads
	MemoryBytes int64 // memory.max (v2), memory.limit_in_bytes (v1)
	// CPUQuota of every CPUPeriod µs, in µs: cpu.max (v2),
	// cpu.cfs_quota_us and cpu.cfs_period_us (v1).
	CPUQuota, CPUPeriod int64
	IO                  []DeviceIO
}

// DeviceIO throttles a cgroup's I/O to one block device: io.max (v2),
// blkio.throttle.* (v1). Zero fields leave that direction unlimited.
type DeviceIO struct {
	Major, Minor        uint32
	ReadBps, WriteBps   uint64
	ReadIOPS, WriteIOPS uint64
}

// Cgroups is a host's cgroup file system: the v1 hierarchies of each
// controller, the v2 unified one, or a mix of both (hybrid hosts).
type Cgroups struct {
	Root string // "/sys/fs/cgroup"
}

// HostCgroups is this host's.
var HostCgroups = Cgroups{Root: "/sys/fs/cgroup"}

// Controllers wisp uses, by their v2 names; v1 calls io "blkio".
var controllers = []string{"pids", "memory", "cpu", "io"}

func v1Name(ctl string) string {
	if ctl == "io" {
		return "blkio"
	}
	return ctl
}

// hierarchy returns the folder that holds controller ctl's cgroups and
// whether it is cgroup v2; "" when the host lacks the controller. A v1
// hierarchy of its own wins over the unified one (hybrid hosts mount the
// classic controllers as v1).
func (c Cgroups) hierarchy(ctl string) (string, bool) {
	v1 := filepath.Join(c.Root, v1Name(ctl))
	if _, err := os.Stat(filepath.Join(v1, "tasks")); err == nil {
		return v1, false
	}
	for _, root := range []string{c.Root, filepath.Join(c.Root, "unified")} {
		b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
		if err == nil && slices.Contains(strings.Fields(string(b)), ctl) {
			return root, true
		}
	}
	return "", false
}

// Version returns 1 or 2 for the hierarchy of controller ctl, 0 when the
// host has no such controller.
func (c Cgroups) Version(ctl string) int {
	dir, v2 := c.hierarchy(ctl)
	switch {
	case dir == "":
		return 0
	case v2:
		return 2
	}
	return 1
}

// Cgroup is one cgroup (the same path in every hierarchy wisp uses).
type Cgroup struct {
	rel  string
	dirs map[string]string // controller -> folder
	v2   map[string]bool
}

// needed returns the controllers l sets (pids always: every sprite has a
// task limit).
func (l Limits) needed() []string {
	out := []string{"pids"}
	if l.MemoryBytes > 0 {
		out = append(out, "memory")
	}
	if l.CPUQuota > 0 {
		out = append(out, "cpu")
	}
	if len(l.IO) > 0 {
		out = append(out, "io")
	}
	return out
}

// Open returns the cgroup rel (below each hierarchy root) without making
// it, for the controllers wisp uses that the host has.
func (c Cgroups) Open(rel string) *Cgroup {
	g := &Cgroup{rel: rel, dirs: map[string]string{}, v2: map[string]bool{}}
	for _, ctl := range controllers {
		if root, v2 := c.hierarchy(ctl); root != "" {
			g.dirs[ctl], g.v2[ctl] = filepath.Join(root, rel), v2
		}
	}
	return g
}

// Make makes (or reuses) the cgroup rel in every hierarchy l needs and
// sets l there. A limit the host cannot enforce (its controller is
// missing) is an error: a sprite does not run unconfined by surprise.
func (c Cgroups) Make(rel string, l Limits) (*Cgroup, error) {
	g := c.Open(rel)
	for _, ctl := range l.needed() {
		if _, ok := g.dirs[ctl]; !ok {
			return nil, fmt.Errorf("cgroup %s: the host has no %s controller (v1 %s or v2 %s)", rel, ctl,
				filepath.Join(c.Root, v1Name(ctl)), filepath.Join(c.Root, "cgroup.controllers"))
		}
	}
	for _, ctl := range l.needed() {
		dir := g.dirs[ctl]
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup %s: %w", rel, err)
		}
		if g.v2[ctl] {
			// Each level above the cgroup hands the controller down.
			root := strings.TrimSuffix(dir, "/"+rel)
			parts := strings.Split(rel, "/")
			for i := range parts {
				ctlDir := filepath.Join(append([]string{root}, parts[:i]...)...)
				if err := write(filepath.Join(ctlDir, "cgroup.subtree_control"), "+"+ctl); err != nil {
					return nil, fmt.Errorf("enable %s in %s: %w", ctl, ctlDir, err)
				}
			}
		}
	}
	if err := g.Set(l); err != nil {
		return nil, err
	}
	return g, nil
}

// Set writes l into the cgroup (its folders must exist).
func (g *Cgroup) Set(l Limits) error {
	var errs []error
	set := func(ctl, file, value string) {
		if err := write(filepath.Join(g.dirs[ctl], file), value); err != nil {
			errs = append(errs, fmt.Errorf("cgroup %s: set %s to %q: %w", g.rel, file, value, err))
		}
	}
	if l.Tasks > 0 {
		set("pids", "pids.max", strconv.Itoa(l.Tasks))
	}
	if l.MemoryBytes > 0 {
		if g.v2["memory"] {
			set("memory", "memory.max", strconv.FormatInt(l.MemoryBytes, 10))
		} else {
			set("memory", "memory.limit_in_bytes", strconv.FormatInt(l.MemoryBytes, 10))
		}
	}
	if l.CPUQuota > 0 {
		period := l.CPUPeriod
		if period <= 0 {
			period = 100000
		}
		if g.v2["cpu"] {
			set("cpu", "cpu.max", fmt.Sprintf("%d %d", l.CPUQuota, period))
		} else {
			set("cpu", "cpu.cfs_period_us", strconv.FormatInt(period, 10))
			set("cpu", "cpu.cfs_quota_us", strconv.FormatInt(l.CPUQuota, 10))
		}
	}
	for _, d := range l.IO {
		dev := fmt.Sprintf("%d:%d", d.Major, d.Minor)
		if g.v2["io"] {
			var kv []string
			for _, f := range []struct {
				k string
				v uint64
			}{{"rbps", d.ReadBps}, {"wbps", d.WriteBps}, {"riops", d.ReadIOPS}, {"wiops", d.WriteIOPS}} {
				if f.v > 0 {
					kv = append(kv, fmt.Sprintf("%s=%d", f.k, f.v))
				}
			}
			set("io", "io.max", dev+" "+strings.Join(kv, " "))
			continue
		}
		for file, v := range map[string]uint64{
			"blkio.throttle.read_bps_device": d.ReadBps, "blkio.throttle.write_bps_device": d.WriteBps,
			"blkio.throttle.read_iops_device": d.ReadIOPS, "blkio.throttle.write_iops_device": d.WriteIOPS,
		} {
			if v > 0 {
				set("io", file, fmt.Sprintf("%s %d", dev, v))
			}
		}
	}
	return errors.Join(errs...)
}

// Join moves the process pid, all its threads, into the cgroup in every
// hierarchy.
func (g *Cgroup) Join(pid int) error {
	done := map[string]bool{}
	for _, ctl := range controllers {
		dir, ok := g.dirs[ctl]
		if !ok || done[dir] {
			continue
		}
		if _, err := os.Stat(dir); err != nil {
			continue // not made: no limit of this controller
		}
		done[dir] = true
		if err := write(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("move pid %d into cgroup %s: %w", pid, dir, err)
		}
	}
	return nil
}

// Dir is the cgroup's folder in controller ctl's hierarchy ("" if none).
func (g *Cgroup) Dir(ctl string) string { return g.dirs[ctl] }

// Remove removes the cgroup from every hierarchy once its processes are
// gone (idempotent).
func (g *Cgroup) Remove() error {
	var errs []error
	for _, dir := range g.dirs {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// write writes value into a cgroup file (no create, no truncate: cgroupfs
// files take one write).
func write(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(value))
	return errors.Join(err, f.Close())
}

// LimitAllTasks caps the tasks (processes and threads) of all sprites
// together at max, in CgroupParent, so that whatever every sprite does the
// host keeps the rest of its pids.
func LimitAllTasks(max int) error {
	if _, err := HostCgroups.Make(CgroupParent, Limits{Tasks: max}); err != nil {
		return fmt.Errorf("limit the tasks of all sprites: %w", err)
	}
	return nil
}

// HostPidMax returns the kernel's pid_max (32,768 when unreadable).
func HostPidMax() int {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		return 32768
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return 32768
	}
	return n
}
