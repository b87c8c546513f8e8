package integration

import (
	"encoding/json"
	"strings"
	"testing"
)

type jailJSON struct {
	HostUID     int `json:"host_uid"`
	Confinement *struct {
		Pid        int      `json:"pid"`
		UID        int      `json:"uid"`
		GID        int      `json:"gid"`
		Root       string   `json:"root"`
		OwnMountNS bool     `json:"own_mount_ns"`
		Seccomp    bool     `json:"seccomp"`
		Cgroup     string   `json:"cgroup"`
		PidsMax    int64    `json:"pids_max"`
		MemoryMax  int64    `json:"memory_max_bytes"`
		CPUMax     string   `json:"cpu_max"`
		IOMax      []string `json:"io_max"`
	} `json:"confinement"`
}

func (d *daemon) jail(name string) jailJSON {
	d.t.Helper()
	var j jailJSON
	if err := json.Unmarshal([]byte(d.ok("info", name, "--json")), &j); err != nil {
		d.t.Fatal(err)
	}
	if j.Confinement == nil {
		d.t.Fatalf("wisp info %s --json reports no confinement", name)
	}
	return j
}

// TestJail: on each backend, wisp info --json and wisp doctor report the
// confinement in force of a running sprite. A QEMU runs as the sprite's
// own uid (two sprites: two uids), chrooted into its empty jail, in a
// cgroup with task, memory and CPU limits, and stays so after a sleep and
// wake and after a kill -9 of the daemon (adopted); a gVisor sandbox has
// its own mount namespace and task, memory, CPU and disk I/O limits.
func TestJail(t *testing.T) {
	for _, backend := range backends() {
		t.Run(backend, func(t *testing.T) {
			d := newDaemon(t, backend)
			d.ok("create", "a", "--cpus", "1")
			d.ok("create", "b", "--cpus", "1")
			check := func(name string) jailJSON {
				t.Helper()
				j := d.jail(name)
				c := j.Confinement
				t.Logf("%s: host uid %d, confinement %+v", name, j.HostUID, *c)
				if !c.Seccomp || c.PidsMax == 0 || c.MemoryMax < 256<<20 || c.CPUMax == "" || !strings.HasPrefix(c.Cgroup, "/wisp/") {
					t.Errorf("%s: limits missing: %+v", name, *c)
				}
				switch backend {
				case "qemu":
					if j.HostUID == 0 || c.UID != j.HostUID || c.GID != j.HostUID || !strings.HasSuffix(c.Root, "/jail") {
						t.Errorf("%s: QEMU runs as %d:%d in %q, want its own uid %d in its jail", name, c.UID, c.GID, c.Root, j.HostUID)
					}
				case "gvisor":
					if j.HostUID != 0 {
						t.Errorf("%s: a gVisor sprite holds host uid %d it does not use", name, j.HostUID)
					}
					if !c.OwnMountNS || len(c.IOMax) != 1 {
						t.Errorf("%s: sandbox without its own mount namespace or disk I/O limit: %+v", name, *c)
					}
				}
				return j
			}
			a, b := check("a"), check("b")
			if backend == "qemu" && a.HostUID == b.HostUID {
				t.Errorf("two sprites share uid %d", a.HostUID)
			}

			d.ok("sleep", "a")
			d.ok("exec", "a", "--", "true") // wakes it
			if again := check("a"); again.HostUID != a.HostUID {
				t.Errorf("after a wake: uid %d, want %d", again.HostUID, a.HostUID)
			}

			d.kill9AndRestart()
			if again := check("b"); again.Confinement.Pid != b.Confinement.Pid || again.HostUID != b.HostUID {
				t.Errorf("after kill -9: %+v, want the adopted pid %d and uid %d", again, b.Confinement.Pid, b.HostUID)
			}

			var doc struct {
				Jail struct {
					Enforced bool                       `json:"enforced"`
					Cgroups  map[string]int             `json:"cgroups"`
					Sprites  map[string]json.RawMessage `json:"sprites"`
				} `json:"jail"`
			}
			if err := json.Unmarshal([]byte(d.ok("doctor", "--json")), &doc); err != nil {
				t.Fatal(err)
			}
			if !doc.Jail.Enforced || doc.Jail.Cgroups["pids"] == 0 || len(doc.Jail.Sprites) != 2 {
				t.Errorf("doctor's jail: %+v", doc.Jail)
			}
			text := d.ok("info", "a")
			if !strings.Contains(text, "jail:") {
				t.Errorf("wisp info shows no jail:\n%s", text)
			}
		})
	}
}
