// Package doctor reports what the host offers wisp and what wisp will use.
package doctor

import (
	"fmt"
	"runtime"
	"strings"
	"syscall"

	"github.com/wisp-sh/wisp/internal/image"
	"github.com/wisp-sh/wisp/internal/storage"
	"github.com/wisp-sh/wisp/internal/vmm/qemu"
)

// Report is the answer of `wisp doctor`.
type Report struct {
	Daemon  string        `json:"daemon"` // "running" or why not
	Version string        `json:"version,omitempty"`
	CPUs    int           `json:"host_cpus"`
	QEMU    qemu.HostInfo `json:"qemu"`
	GVisor  *GVisorInfo   `json:"gvisor,omitempty"`
	Kernel  string        `json:"kernel,omitempty"` // cached guest kernel version
	Images  []image.Info  `json:"images,omitempty"`
	Backend BackendChoice `json:"backend"`
	DataDir string        `json:"data_dir,omitempty"`
	FreeGiB float64       `json:"data_dir_free_gib,omitempty"`
	Pool    *PoolInfo     `json:"pool,omitempty"`
	// WarmSnapshots are the saved, freshly booted sprites creates restore.
	WarmSnapshots []string     `json:"warm_snapshots,omitempty"`
	Network       *NetworkInfo `json:"network,omitempty"`
	Jail          *JailInfo    `json:"jail,omitempty"`
}

// PoolInfo is the storage pool's kind and space.
type PoolInfo struct {
	Root    string `json:"root"`
	Kind    string `json:"kind"` // native, xfs-loop or copy
	Warning string `json:"warning,omitempty"`
	Size    int64  `json:"size_bytes"`
	Used    int64  `json:"used_bytes"`
	Free    int64  `json:"free_bytes"`
}

// GVisorInfo describes the gVisor backend's runsc.
type GVisorInfo struct {
	Runsc   string `json:"runsc,omitempty"`
	Version string `json:"version,omitempty"`
	Problem string `json:"problem,omitempty"`
}

// BackendChoice says which backend `auto` picks and why.
type BackendChoice struct {
	Configured string `json:"configured"`
	Auto       string `json:"auto"`
	Reason     string `json:"reason"`
}

// Options is what the daemon knows beyond the host.
type Options struct {
	Version string
	DataDir string
	Images  *image.Store
	Backend string
	GVisor  *GVisorInfo
	Choice  *BackendChoice
	Pool    *storage.Pool
	Warm    func() []string
	Network *NetworkInfo
	Jail    func() *JailInfo
}

// Probe inspects the host.
func Probe(o Options) Report {
	r := Report{Daemon: "running", Version: o.Version, CPUs: runtime.NumCPU(), QEMU: qemu.Detect("qemu-system-x86_64"), GVisor: o.GVisor, DataDir: o.DataDir}
	if o.Choice != nil {
		r.Backend = *o.Choice
	} else {
		r.Backend = BackendChoice{Configured: "auto", Auto: "qemu", Reason: "the daemon is not running; see `wisp doctor` once it is"}
	}
	if o.Images != nil {
		r.Kernel = o.Images.CachedKernelVersion()
		r.Images, _ = o.Images.List()
	}
	if o.Warm != nil {
		r.WarmSnapshots = o.Warm()
	}
	r.Network = o.Network
	if o.Jail != nil {
		r.Jail = o.Jail()
	}
	if o.Pool != nil {
		if st, err := o.Pool.Stats(); err == nil {
			r.Pool = &PoolInfo{Root: st.Root, Kind: st.Kind, Warning: st.Warning, Size: st.Size, Used: st.Used, Free: st.Free}
		}
	}
	if o.DataDir != "" {
		var st syscall.Statfs_t
		if syscall.Statfs(o.DataDir, &st) == nil {
			r.FreeGiB = float64(st.Bavail*uint64(st.Bsize)) / (1 << 30)
		}
	}
	return r
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// String renders the report for people.
func (r Report) String() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p("daemon:          %s", r.Daemon)
	if r.Version != "" {
		p("version:         %s", r.Version)
	}
	p("host cpus:       %d", r.CPUs)
	p("hardware KVM:    %s (%s)", yes(r.QEMU.KVM), r.QEMU.KVMWhy)
	if r.QEMU.Version != "" {
		p("qemu:            %s (%s), accel %s, seccomp sandbox %s", r.QEMU.Version, r.QEMU.Binary, r.QEMU.Accel, yes(r.QEMU.Sandbox))
	}
	for _, pr := range r.QEMU.Problems {
		p("qemu problem:    %s", pr)
	}
	if r.GVisor != nil {
		if r.GVisor.Problem != "" {
			p("gvisor:          unavailable: %s", r.GVisor.Problem)
		} else {
			p("gvisor:          %s (%s)", r.GVisor.Version, r.GVisor.Runsc)
		}
	}
	if r.Kernel != "" {
		p("guest kernel:    %s", r.Kernel)
	} else if r.Daemon == "running" {
		p("guest kernel:    not fetched yet (fetched on first create)")
	}
	for _, im := range r.Images {
		state := "not built (wisp image build " + im.Name + ")"
		if im.Built {
			state = fmt.Sprintf("built, %d MiB", im.SizeBytes>>20)
		}
		p("image %-10s %s", im.Name+":", state)
	}
	p("backend:         configured %s; auto picks %s: %s", r.Backend.Configured, r.Backend.Auto, r.Backend.Reason)
	if r.DataDir != "" {
		p("data dir:        %s (%.1f GiB free)", r.DataDir, r.FreeGiB)
	}
	for _, w := range r.WarmSnapshots {
		p("warm snapshot:   %s", w)
	}
	if r.Network != nil {
		r.Network.lines(p)
	}
	if r.Jail != nil {
		r.Jail.lines(p)
	}
	if r.Pool != nil {
		p("storage pool:    %s (%s): %.1f of %.1f GiB used, %.1f GiB free", r.Pool.Root, r.Pool.Kind,
			float64(r.Pool.Used)/(1<<30), float64(r.Pool.Size)/(1<<30), float64(r.Pool.Free)/(1<<30))
		if r.Pool.Warning != "" {
			p("pool warning:    %s", r.Pool.Warning)
		}
	}
	return b.String()
}
