package api

// DoctorReport is the answer of GET /v1/doctor: what the daemon's host
// offers and what wispd uses. Text is the same, as a person reads it.
type DoctorReport struct {
	Daemon        string         `json:"daemon"` // "running" or why not
	Version       string         `json:"version,omitempty"`
	CPUs          int            `json:"host_cpus"`
	QEMU          DoctorQEMU     `json:"qemu"`
	GVisor        *DoctorGVisor  `json:"gvisor,omitempty"`
	Kernel        string         `json:"kernel,omitempty"` // cached guest kernel version
	Images        []Image        `json:"images,omitempty"`
	Backend       DoctorBackend  `json:"backend"`
	DataDir       string         `json:"data_dir,omitempty"`
	FreeGiB       float64        `json:"data_dir_free_gib,omitempty"`
	Pool          *DoctorPool    `json:"pool,omitempty"`
	WarmSnapshots []string       `json:"warm_snapshots,omitempty"`
	Network       *DoctorNetwork `json:"network,omitempty"`
	Jail          *DoctorJail    `json:"jail,omitempty"`
	Text          string         `json:"text,omitempty"`
}

// DoctorQEMU describes the host's QEMU.
type DoctorQEMU struct {
	Binary   string   `json:"binary"`
	Version  string   `json:"version"`
	KVM      bool     `json:"kvm"`
	KVMWhy   string   `json:"kvm_reason"`
	Accel    string   `json:"accel"`
	Sandbox  bool     `json:"sandbox"`
	TSCKHz   int      `json:"tsc_khz"`
	Problems []string `json:"problems,omitempty"`
}

// DoctorGVisor describes the gVisor backend's runsc.
type DoctorGVisor struct {
	Runsc   string `json:"runsc,omitempty"`
	Version string `json:"version,omitempty"`
	Problem string `json:"problem,omitempty"`
}

// DoctorBackend says which backend `auto` picks and why.
type DoctorBackend struct {
	Configured string `json:"configured"`
	Auto       string `json:"auto"`
	Reason     string `json:"reason"`
}

// DoctorPool is the storage pool's kind and space.
type DoctorPool struct {
	Root    string `json:"root"`
	Kind    string `json:"kind"` // native, xfs-loop or copy
	Warning string `json:"warning,omitempty"`
	Size    int64  `json:"size_bytes"`
	Used    int64  `json:"used_bytes"`
	Free    int64  `json:"free_bytes"`
}

// DoctorNetwork is how sprites reach the network.
type DoctorNetwork struct {
	Problem      string   `json:"problem,omitempty"`
	CIDR         string   `json:"cidr,omitempty"`
	Forwarding   bool     `json:"ipv4_forwarding"`
	DefaultRoute string   `json:"default_route,omitempty"`
	Nftables     string   `json:"nftables,omitempty"`
	Open         []string `json:"open,omitempty"`
	Deny         []string `json:"deny,omitempty"`
}

// BenchSamples is the answer of POST /v1/bench/net-setup?samples=N: how
// long each network setup of a sprite took, in milliseconds, measured by
// the daemon on a network of its own (what `wisp bench net` reports as
// net_setup).
type BenchSamples struct {
	Ms []float64 `json:"ms"`
}
