package gvisor

import (
	"path/filepath"
	"strconv"

	"github.com/wisp-sh/wisp/internal/vmm"
)

// Where the agent and its socket folder appear inside the sandbox.
const (
	guestAgent   = "/.wisp/agent"
	guestSockDir = "/.wisp/sock"
	cpuPeriod    = 100000 // µs
)

// The subset of the OCI runtime spec (v1.0) that runsc needs from us.
type ociSpec struct {
	Version  string     `json:"ociVersion"`
	Process  ociProcess `json:"process"`
	Root     ociRoot    `json:"root"`
	Hostname string     `json:"hostname"`
	Mounts   []ociMount `json:"mounts"`
	Linux    ociLinux   `json:"linux"`
}

type ociProcess struct {
	User         ociUser             `json:"user"`
	Args         []string            `json:"args"`
	Env          []string            `json:"env"`
	Cwd          string              `json:"cwd"`
	Capabilities map[string][]string `json:"capabilities"`
}

type ociUser struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

type ociNamespace struct {
	Type string `json:"type"`
	Path string `json:"path,omitempty"`
}

type ociRoot struct {
	Path     string `json:"path"`
	Readonly bool   `json:"readonly"`
}

type ociMount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Source      string   `json:"source"`
	Options     []string `json:"options,omitempty"`
}

type ociLinux struct {
	Namespaces  []ociNamespace `json:"namespaces"`
	CgroupsPath string         `json:"cgroupsPath"`
	Resources   struct {
		Memory struct {
			Limit int64 `json:"limit,omitempty"`
		} `json:"memory"`
		CPU struct {
			Quota  int64  `json:"quota,omitempty"`
			Period uint64 `json:"period,omitempty"`
		} `json:"cpu"`
		Pids struct {
			Limit int64 `json:"limit,omitempty"`
		} `json:"pids"`
		BlockIO ociBlockIO `json:"blockIO"`
	} `json:"resources"`
}

type ociBlockIO struct {
	ReadBps   []ociThrottle `json:"throttleReadBpsDevice,omitempty"`
	WriteBps  []ociThrottle `json:"throttleWriteBpsDevice,omitempty"`
	ReadIOPS  []ociThrottle `json:"throttleReadIOPSDevice,omitempty"`
	WriteIOPS []ociThrottle `json:"throttleWriteIOPSDevice,omitempty"`
}

type ociThrottle struct {
	Major int64  `json:"major"`
	Minor int64  `json:"minor"`
	Rate  uint64 `json:"rate"`
}

// caps is what the agent (root, PID 1) holds inside the sandbox: it
// switches users, sets the hostname and clock, and root in a sprite is
// expected to be able to do root things. The gVisor kernel, not the host,
// enforces them.
var caps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_MKNOD", "CAP_AUDIT_WRITE", "CAP_SETFCAP",
}

// ociConfig is the bundle's config.json for spec: the mounted disk as a
// writable root, the agent and its socket folder bound in, the agent as PID 1;
// its cgroup limits memory, CPU, tasks and the I/O to its disk (io).
func ociConfig(spec vmm.Spec, rootfs, sockDir string, io vmm.DeviceIO) ociSpec {
	s := ociSpec{
		Version: "1.0.0",
		Process: ociProcess{
			// The identity goes in the environment, not the arguments:
			// runsc restore demands the arguments of the checkpoint, so a
			// sandbox restored into another sprite (a warm create, a fork)
			// must not differ there. The restorer then sets the identity.
			Args: []string{guestAgent, "--socket", guestSockDir + "/" + sockName},
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
				"WISP_HOSTNAME=" + spec.Name, "WISP_MACHINE_ID=" + spec.MachineID,
				"WISP_PIDS=" + strconv.Itoa(spec.GuestPids())},
			Cwd: "/",
			Capabilities: map[string][]string{
				"bounding": caps, "effective": caps, "permitted": caps,
			},
		},
		Root:     ociRoot{Path: rootfs},
		Hostname: spec.Name,
		Mounts: []ociMount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs"},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=0755"}},
			// As in a VM, /tmp is on the disk: runsc would otherwise put a
			// tmpfs there, filling the sprite's memory. See ensureTmp.
			{Destination: "/tmp", Type: "bind", Source: filepath.Join(rootfs, "tmp"), Options: []string{"rbind", "rw"}},
			{Destination: guestAgent, Type: "bind", Source: spec.Agent, Options: []string{"rbind", "ro"}},
			{Destination: guestSockDir, Type: "bind", Source: sockDir, Options: []string{"rbind", "rw"}},
		},
	}
	for _, ns := range []string{"pid", "ipc", "uts", "mount", "network"} {
		n := ociNamespace{Type: ns}
		if ns == "network" && spec.Net != nil {
			// runsc's own network stack takes over the veth end in the
			// sprite's namespace (--network sandbox).
			n.Path = spec.Net.Netns
		}
		s.Linux.Namespaces = append(s.Linux.Namespaces, n)
	}
	if spec.Net != nil {
		s.Process.Env = append(s.Process.Env, "WISP_ADDR="+spec.Net.Address, "WISP_GW="+spec.Net.Gateway)
	}
	s.Linux.CgroupsPath = "/wisp/" + containerID(spec)
	if spec.MemoryMiB > 0 {
		s.Linux.Resources.Memory.Limit = int64(spec.MemoryMiB) << 20
	}
	s.Linux.Resources.Pids.Limit = hostPids(spec.GuestPids())
	if io.Major != 0 || io.Minor != 0 {
		t := func(rate uint64) []ociThrottle {
			if rate == 0 {
				return nil
			}
			return []ociThrottle{{Major: int64(io.Major), Minor: int64(io.Minor), Rate: rate}}
		}
		s.Linux.Resources.BlockIO = ociBlockIO{ReadBps: t(io.ReadBps), WriteBps: t(io.WriteBps), ReadIOPS: t(io.ReadIOPS), WriteIOPS: t(io.WriteIOPS)}
	}
	if spec.CPUs > 0 {
		s.Linux.Resources.CPU.Quota = int64(spec.CPUs) * cpuPeriod
		s.Linux.Resources.CPU.Period = cpuPeriod
	}
	return s
}

// Host tasks of a sandbox (the cgroup's pids.max counts threads). Under
// systrap each guest process costs the host two tasks (its stub process
// and the stub's syscall thread: 500 guest sleeps made 1,002 host
// processes), and the sentry and gofer are Go programs whose threads come
// and go with blocking host calls.
const (
	tasksPerGuestProcess = 2
	sandboxBaseTasks     = 256 // sentry and gofer threads, with room
)

// hostPids is the sandbox cgroup's pids.max for a guest limit of n
// processes: n guest processes fit, and the host pays at most this many
// tasks whatever the guest does.
func hostPids(n int) int64 {
	return int64(n)*tasksPerGuestProcess + sandboxBaseTasks
}
