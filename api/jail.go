package api

// Confinement is what confines a sprite's running VMM or sandbox, as the
// host's kernel reports it (wisp info --json: confinement).
type Confinement struct {
	Pid int `json:"pid"`
	UID int `json:"uid"` // effective
	GID int `json:"gid"`
	// Root is the process's root folder ("/": not chrooted); with its own
	// mount namespace, as the process sees it.
	Root       string `json:"root"`
	OwnMountNS bool   `json:"own_mount_ns"`
	Seccomp    bool   `json:"seccomp"`
	NoNewPrivs bool   `json:"no_new_privs"`
	// Cgroup is its cgroup path, CgroupVersion 1 or 2, and the limits in
	// force there (0 or "": none).
	Cgroup        string   `json:"cgroup"`
	CgroupVersion int      `json:"cgroup_version"`
	PidsMax       int64    `json:"pids_max,omitempty"`
	MemoryMax     int64    `json:"memory_max_bytes,omitempty"`
	CPUMax        string   `json:"cpu_max,omitempty"` // "QUOTA PERIOD" in µs
	IOMax         []string `json:"io_max,omitempty"`
	// Text is the same in one line, as a person reads it.
	Text string `json:"text,omitempty"`
}

// DoctorJail is how sprites' VMMs and sandboxes are confined on the host.
type DoctorJail struct {
	VMMUIDs  string                 `json:"vmm_uids"` // "FIRST-LAST", one per sprite
	Enforced bool                   `json:"enforced"`
	Cgroups  map[string]int         `json:"cgroups"` // controller: version (0 missing)
	Sprites  map[string]Confinement `json:"sprites,omitempty"`
}
