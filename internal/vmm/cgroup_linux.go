package vmm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CgroupParent is the cgroup (path below each hierarchy's root) that holds
// every sprite's: runsc makes "/wisp/wisp-ID" for a sandbox, and QEMU
// drivers "/wisp/qemu-ID".
const CgroupParent = "wisp"

// pidsRoot returns where the pids controller is mounted: the cgroup v1
// pids hierarchy, or the v2 unified hierarchy when it offers pids.
func pidsRoot() (dir string, v2 bool, err error) {
	if _, err := os.Stat("/sys/fs/cgroup/pids/tasks"); err == nil {
		return "/sys/fs/cgroup/pids", false, nil
	}
	b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	if err == nil && strings.Contains(" "+strings.TrimSpace(string(b))+" ", " pids ") {
		return "/sys/fs/cgroup", true, nil
	}
	return "", false, errors.New("no pids cgroup controller (neither /sys/fs/cgroup/pids nor pids in cgroup v2)")
}

// pidsDir makes the cgroup rel (below the pids root) and returns its folder;
// on cgroup v2 the pids controller is enabled down to it.
func pidsDir(rel string) (string, error) {
	root, v2, err := pidsRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if v2 {
		// Each level above the cgroup hands the controller down.
		parts := strings.Split(rel, "/")
		for i := range parts {
			ctl := filepath.Join(append([]string{root}, parts[:i]...)...)
			if err := os.WriteFile(filepath.Join(ctl, "cgroup.subtree_control"), []byte("+pids"), 0); err != nil {
				return "", fmt.Errorf("enable pids in %s: %w", ctl, err)
			}
		}
	}
	return dir, nil
}

// LimitAllTasks caps the tasks (processes and threads) of all sprites
// together at max, in CgroupParent, so that whatever every sprite does the
// host keeps the rest of its pids.
func LimitAllTasks(max int) error {
	dir, err := pidsDir(CgroupParent)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "pids.max"), []byte(strconv.Itoa(max)), 0); err != nil {
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

// TaskCgroup is a pids cgroup of one sprite's VMM process, below
// CgroupParent.
type TaskCgroup struct{ dir string }

// NewTaskCgroup makes (or reuses) the cgroup name below CgroupParent with
// pids.max set to max.
func NewTaskCgroup(name string, max int) (*TaskCgroup, error) {
	dir, err := pidsDir(CgroupParent + "/" + name)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "pids.max"), []byte(strconv.Itoa(max)), 0); err != nil {
		return nil, fmt.Errorf("cgroup %s: set pids.max: %w", dir, err)
	}
	return &TaskCgroup{dir: dir}, nil
}

// Join moves the process pid, all its threads, into the cgroup.
func (c *TaskCgroup) Join(pid int) error {
	if err := os.WriteFile(filepath.Join(c.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("move pid %d into cgroup %s: %w", pid, c.dir, err)
	}
	return nil
}

// Dir is the cgroup's folder.
func (c *TaskCgroup) Dir() string { return c.dir }

// RemoveTaskCgroup removes the cgroup name once its processes are gone
// (idempotent).
func RemoveTaskCgroup(name string) error {
	root, _, err := pidsRoot()
	if err != nil {
		return nil
	}
	err = os.Remove(filepath.Join(root, CgroupParent, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
