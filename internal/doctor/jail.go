package doctor

import (
	"fmt"
	"sort"
	"strings"

	"github.com/wisp-sh/wisp/internal/vmm"
)

// JailInfo is how sprites' VMMs and sandboxes are confined on this host.
type JailInfo struct {
	// VMMUIDs is the range of host uids sprites' VMMs run as, one each
	// ("FIRST-LAST"); Enforced says the daemon can use them (it runs as
	// root: QEMU drops to the sprite's uid and chroots into an empty
	// folder).
	VMMUIDs  string `json:"vmm_uids"`
	Enforced bool   `json:"enforced"`
	// Cgroups is the version of each controller's hierarchy (pids,
	// memory, cpu, io): 1, 2, or 0 where the host lacks it.
	Cgroups map[string]int `json:"cgroups"`
	// Sprites is the confinement in force of each running sprite.
	Sprites map[string]vmm.Confinement `json:"sprites,omitempty"`
}

func (j *JailInfo) lines(p func(string, ...any)) {
	enf := "enforced"
	if !j.Enforced {
		enf = "NOT enforced: wispd does not run as root"
	}
	p("vmm uids:        %s, one per sprite (%s)", j.VMMUIDs, enf)
	var cg []string
	for _, c := range []string{"pids", "memory", "cpu", "io"} {
		v := "missing"
		if n := j.Cgroups[c]; n > 0 {
			v = fmt.Sprintf("v%d", n)
		}
		cg = append(cg, c+" "+v)
	}
	p("cgroups:         %s", strings.Join(cg, ", "))
	names := make([]string, 0, len(j.Sprites))
	for n := range j.Sprites {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p("jail %-10s %s", n+":", Describe(j.Sprites[n]))
	}
}

// Describe renders a confinement on one line.
func Describe(c vmm.Confinement) string {
	var b []string
	b = append(b, fmt.Sprintf("pid %d uid %d gid %d", c.Pid, c.UID, c.GID))
	switch {
	case c.OwnMountNS:
		b = append(b, "own mount namespace (root "+c.Root+")")
	case c.Root != "/" && c.Root != "":
		b = append(b, "chroot "+c.Root)
	default:
		b = append(b, "no chroot")
	}
	if c.Seccomp {
		b = append(b, "seccomp")
	}
	lim := fmt.Sprintf("cgroup v%d %s:", c.CgroupVersion, c.Cgroup)
	if c.PidsMax > 0 {
		lim += fmt.Sprintf(" tasks %d", c.PidsMax)
	}
	if c.MemoryMax > 0 {
		lim += fmt.Sprintf(" memory %d MiB", c.MemoryMax>>20)
	}
	if c.CPUMax != "" {
		var q, per float64
		if _, err := fmt.Sscanf(c.CPUMax, "%f %f", &q, &per); err == nil && per > 0 {
			lim += fmt.Sprintf(" cpu %.2g", q/per)
		}
	}
	for _, io := range c.IOMax {
		lim += " io " + io
	}
	return strings.Join(append(b, lim), ", ")
}
