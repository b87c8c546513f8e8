package vmm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCgroupLayouts: each controller is found where the host mounts it:
// v1 hierarchies, the v2 unified one, and hybrids (v1 controllers beside
// an empty unified hierarchy, as on this project's machines).
func TestCgroupLayouts(t *testing.T) {
	mk := func(t *testing.T, files map[string]string) Cgroups {
		root := t.TempDir()
		for name, body := range files {
			p := filepath.Join(root, name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return Cgroups{Root: root}
	}
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  map[string]int // controller -> version
	}{
		{"v1", map[string]string{"pids/tasks": "", "memory/tasks": "", "cpu/tasks": "", "blkio/tasks": ""},
			map[string]int{"pids": 1, "memory": 1, "cpu": 1, "io": 1}},
		{"v2", map[string]string{"cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n"},
			map[string]int{"pids": 2, "memory": 2, "cpu": 2, "io": 2}},
		{"hybrid", map[string]string{"pids/tasks": "", "memory/tasks": "", "cpu/tasks": "", "blkio/tasks": "", "unified/cgroup.controllers": "\n"},
			map[string]int{"pids": 1, "memory": 1, "cpu": 1, "io": 1}},
		{"v2 without io", map[string]string{"cgroup.controllers": "cpu memory pids\n"},
			map[string]int{"pids": 2, "memory": 2, "cpu": 2, "io": 0}},
		{"none", map[string]string{}, map[string]int{"pids": 0, "memory": 0, "cpu": 0, "io": 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mk(t, tc.files)
			for ctl, want := range tc.want {
				if got := c.Version(ctl); got != want {
					t.Errorf("%s: version %d, want %d", ctl, got, want)
				}
			}
		})
	}
	// A limit the host cannot enforce fails the make.
	c := mk(t, map[string]string{"cgroup.controllers": "pids\n"})
	if _, err := c.Make("wisp/x", Limits{Tasks: 10, MemoryBytes: 1 << 30}); err == nil || !strings.Contains(err.Error(), "no memory controller") {
		t.Errorf("memory limit on a host without the controller: %v", err)
	}
}

// TestCgroupLimits makes a cgroup with every limit on this host, puts a
// process in it, and reads the limits back as Inspect reports them.
func TestCgroupLimits(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("cgroups need root")
	}
	var st unix.Stat_t
	if err := unix.Stat("/dev/loop0", &st); err != nil {
		t.Skip("no /dev/loop0 to throttle")
	}
	major, minor := unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))
	rel := fmt.Sprintf("%s/test-%d", CgroupParent, os.Getpid())
	l := Limits{Tasks: 17, MemoryBytes: 300 << 20, CPUQuota: 150000, CPUPeriod: 100000,
		IO: []DeviceIO{{Major: major, Minor: minor, ReadBps: 1 << 20, WriteBps: 2 << 20, ReadIOPS: 100, WriteIOPS: 200}}}
	g, err := HostCgroups.Make(rel, l)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if err := g.Remove(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(g.Dir("pids")); err == nil {
			t.Errorf("%s left", g.Dir("pids"))
		}
	}()
	if err := g.Join(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	cf, err := Inspect(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", cf)
	if cf.Cgroup != "/"+rel || cf.PidsMax != 17 || cf.MemoryMax != 300<<20 || cf.CPUMax != "150000 100000" {
		t.Errorf("confinement %+v, want cgroup /%s, 17 tasks, 300 MiB, 1.5 CPUs", cf, rel)
	}
	wantIO := fmt.Sprintf("%d:%d rbps=1048576 wbps=2097152 riops=100 wiops=200", major, minor)
	if !slices.Contains(cf.IOMax, wantIO) {
		t.Errorf("io %q, want %q", cf.IOMax, wantIO)
	}
	if cf.UID != 0 || cf.Root != "/" || cf.OwnMountNS {
		t.Errorf("an unconfined sleep reported as %+v", cf)
	}
}
