// Package vmm defines the Driver interface every isolation backend meets
// (QEMU microVMs, gVisor sandboxes), and what they are given and return.
package vmm

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
)

// Spec is everything a backend needs to run one sprite. Dir is the sprite's
// own folder: the backend keeps its sockets, pid file, console log and
// memory file there, so a restarted daemon finds them again.
type Spec struct {
	ID        string // stable, unique, short (used in socket paths)
	Name      string // the sprite's hostname
	Dir       string
	CPUs      int
	MemoryMiB int
	Disk      string // the writable root disk (raw ext4 image)
	DiskGiB   int
	Kernel    string // PVH vmlinux (VM backends)
	Initrd    string // initramfs holding the agent (VM backends)
	Agent     string // the agent binary (sandbox backends)
	MAC       string
	MachineID string // 32 hex digits; the guest's /etc/machine-id
	// Net is the sprite's network, made by the daemon before each start
	// and restore; nil: none (VM backends then get a restricted,
	// unreachable user-mode NIC, so a saved VM keeps its devices).
	Net    *Net   `json:",omitempty"`
	Pids   int    // the guest's process limit; 0 means DefaultPids
	LogDir string // where the backend writes its logs (see MountLogDir); "" means Dir
	// UID is the host user (and group) of the sprite's own that its VMM
	// runs as once started (a VM backend run by root); 0: the driver's
	// default.
	UID int `json:",omitempty"`
}

// Net is a sprite's network on the host: a namespace holding the link its
// backend uses. A driver that implements TapUser gets a tap there (its
// guest holds Address); otherwise a veth end that holds Address already,
// for a sandbox's own network stack to take over.
type Net struct {
	Netns   string `json:"netns"`   // path of the namespace (a bind mount)
	Link    string `json:"link"`    // the tap or veth in it
	Address string `json:"address"` // the guest's address, with prefix ("10.229.0.2/30")
	Gateway string `json:"gateway"` // the host's end; also the guest's DNS server
}

// UIDUser is implemented by drivers whose VMM runs as Spec.UID, a host
// user of the sprite's own; UsesUID says whether it does on this host.
type UIDUser interface {
	UsesUID() bool
}

// TapUser is implemented by drivers whose guests have a NIC of their own
// (VMs): their network is a tap, not a veth end.
type TapUser interface {
	WantsTap() bool
}

// Logs returns the folder of the instance's logs.
func (s Spec) Logs() string {
	if s.LogDir != "" {
		return s.LogDir
	}
	return s.Dir
}

// ConsoleLog is the name of the guest console's log in Spec.Logs(), for
// every backend.
const ConsoleLog = "console.log"

// DefaultPids is a sprite's process limit when its spec does not say.
const DefaultPids = 1024

// GuestPids returns spec's process limit.
func (s Spec) GuestPids() int {
	if s.Pids > 0 {
		return s.Pids
	}
	return DefaultPids
}

// MemoryFiler is implemented by drivers whose running instances keep the
// guest's RAM in a file of their spec's Dir (optional capability): while
// the instance runs that file is memory, not storage.
type MemoryFiler interface {
	MemoryFile(spec Spec) string
}

// Info describes a running instance.
type Info struct {
	Backend string `json:"backend"` // "qemu", "gvisor"
	Accel   string `json:"accel"`   // "kvm", "tcg", "systrap"
	Pid     int    `json:"pid"`     // the VMM / sandbox process on the host
}

// ErrNotRunning is returned by Adopt when no instance of the spec runs.
var ErrNotRunning = errors.New("not running")

// Driver starts and adopts instances of one backend.
//
// Lifecycle: Start boots a new instance and returns once its agent answered
// the handshake (a boot that hangs is retried by the driver's watchdog).
// After a daemon restart, Adopt re-attaches to an instance that kept running,
// or fails with ErrNotRunning (and cleans up stale files) when it did not.
// Reap ends whatever still runs for spec without talking to it, and returns
// once it is gone: for an instance Adopt could not reach (a VM still
// booting when the daemon died, a hung guest), which must not keep running
// beside a new one on the same disk. The instance's life never depends on
// the ctx passed to any of them: ctx bounds only the wait.
type Driver interface {
	Name() string
	Start(ctx context.Context, spec Spec) (Instance, error)
	Adopt(ctx context.Context, spec Spec) (Instance, error)
	Reap(ctx context.Context, spec Spec) error
}

// Instance is one running sprite.
//
// Stop is graceful and idempotent: it asks the agent to flush and then ends
// the backend process; it returns when the process is gone. Kill ends it at
// once. Close lets go of host-side handles (agent connection, monitor) and
// leaves the instance running: the daemon calls it when it exits.
type Instance interface {
	Info() Info
	Agent() *agent.Client
	Stop(ctx context.Context) error
	Kill() error
	Close() error
	// Done is closed when the backend process has exited.
	Done() <-chan struct{}
}

// Freezer is implemented by backends that can quiesce an instance's root
// filesystem so that its disk file is consistent on the host (optional
// capability). Between Freeze and thaw the caller may clone the disk file;
// the freeze must be short (milliseconds) and running processes only see
// their writes wait.
type Freezer interface {
	Freeze(ctx context.Context, inst Instance) (thaw func() error, err error)
}

// Saver is implemented by backends that can save an instance's memory and
// device state and restore it with its processes running (optional
// capability; sleep/wake and memory checkpoints use it).
//
// Save pauses the instance and writes its state into dir (files of the
// backend's choosing; the disk is not among them). dir appears whole or
// not at all (made aside and renamed into place): a dir that exists holds
// a whole state, also after a crash in the middle of a Save. The state in dir is
// self-contained (a checkpoint may be restored into another sprite), except
// in SleepDir(spec), where a backend may leave memory where it is. While the instance is
// still paused it calls during (may be nil), where the caller clones the
// disk. Then it resumes the instance (keep) or ends its process (!keep:
// the instance is gone and Done is closed when Save returns).
//
// Restore starts an instance of spec from the state in dir, with spec.Disk
// as it was when that state was saved, and returns it running with the
// agent answering. dir is only read; it may be restored again.
type Saver interface {
	Save(ctx context.Context, inst Instance, dir string, keep bool, during func() error) error
	Restore(ctx context.Context, spec Spec, dir string) (Instance, error)
}

// Woken is implemented by instances that Saver.Restore made: how the
// restore went, for the wake's report.
type Woken interface {
	Woke() WakeSplit
}

// WakeSplit is where a restore's time went: Restore until the guest runs
// again (VMM start, state load), Handshake until its agent answered.
// KeptSession: the host's agent session from before the sleep went on
// over the new VMM, with no new handshake.
type WakeSplit struct {
	Restore     time.Duration
	Handshake   time.Duration
	KeptSession bool
}

// SleepDir is where a sleeping instance's state is saved: inside its own
// folder, so a backend may keep memory in place instead of copying it.
func SleepDir(spec Spec) string { return filepath.Join(spec.Dir, "sleep") }

// FlushGuest asks the guest agent to sync and remount its root read-only
// before the backend process ends, for at most 10 s. A failure is logged,
// not returned: the stop goes on.
func FlushGuest(ctx context.Context, log *slog.Logger, name string, ag *agent.Client) {
	if ag == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := ag.Shutdown(ctx); err != nil {
		log.Warn("guest shutdown", "sprite", name, "err", err)
	}
}

// Confinement is what confines a running VMM or sandbox process, as the
// kernel reports it (read from /proc and the cgroup files, not from what
// the daemon asked for).
type Confinement struct {
	Pid int `json:"pid"`
	UID int `json:"uid"` // effective
	GID int `json:"gid"`
	// Root is the process's root folder as the daemon sees it ("/": not
	// chrooted); in a mount namespace of its own, as the process sees it.
	Root       string `json:"root"`
	OwnMountNS bool   `json:"own_mount_ns"`
	Seccomp    bool   `json:"seccomp"` // a seccomp filter is installed
	NoNewPrivs bool   `json:"no_new_privs"`
	// Cgroup is the process's cgroup path (of the pids controller);
	// CgroupVersion 1 or 2.
	Cgroup        string `json:"cgroup"`
	CgroupVersion int    `json:"cgroup_version"`
	// Limits in force in that cgroup: 0 or "" means none.
	PidsMax   int64    `json:"pids_max,omitempty"`
	MemoryMax int64    `json:"memory_max_bytes,omitempty"`
	CPUMax    string   `json:"cpu_max,omitempty"` // "QUOTA PERIOD" in µs
	IOMax     []string `json:"io_max,omitempty"`  // "MAJ:MIN rbps=N wbps=N riops=N wiops=N"
}

// Confined is implemented by instances that can report their confinement.
type Confined interface {
	Confinement() (Confinement, error)
}
