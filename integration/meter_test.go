package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/network/nettest"
)

func (d *daemon) usage(name string) api.Usage {
	d.t.Helper()
	var rep api.UsageReport
	if err := json.Unmarshal([]byte(d.ok("usage", name, "--since", "all", "--json")), &rep); err != nil {
		d.t.Fatal(err)
	}
	if len(rep.Sprites) != 1 {
		d.t.Fatalf("usage of %s: %+v", name, rep)
	}
	return rep.Sprites[0]
}

func (d *daemon) live(name string) api.Live {
	d.t.Helper()
	var all []api.Live
	if err := json.Unmarshal([]byte(d.ok("top", "--json")), &all); err != nil {
		d.t.Fatal(err)
	}
	for _, l := range all {
		if l.Sprite == name {
			return l
		}
	}
	return api.Live{}
}

// waitTicks waits until the meter has sampled n more times (each sample
// of a sprite accrues storage, so its storage figure moves).
func (d *daemon) waitTicks(name string, n int) api.Usage {
	d.t.Helper()
	u := d.usage(name)
	for range n {
		prev := u.StorageGiBHours
		waitFor(d.t, 30*time.Second, "a usage sample", func() bool { u = d.usage(name); return u.StorageGiBHours > prev })
	}
	return u
}

// guestCPU runs script in the sprite and returns the CPU time its
// children used, as the guest counts it (the shell's cutime + cstime).
// Under host contention a guest over-counts (its clock runs while the
// host has it preempted), so it is logged, not held against the meter.
func (d *daemon) guestCPU(name, script string) time.Duration {
	d.t.Helper()
	out := d.ok("exec", name, "--", "sh", "-c", script+`; cat /proc/$$/stat`)
	f := strings.Fields(out[strings.LastIndexByte(out, ')')+1:])
	cu, _ := strconv.Atoi(f[13])
	cs, _ := strconv.Atoi(f[14])
	return time.Duration(cu+cs) * 10 * time.Millisecond
}

// hostCPU is the kernel's own count of the CPU time the sprite's VMM or
// sandbox used: its cgroup's where it has one of its own (below /wisp),
// else its process's. Read here without the meter's code.
func (d *daemon) hostCPU(name string) time.Duration {
	d.t.Helper()
	pid := d.info(name).Pid
	groups, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		d.t.Fatal(err)
	}
	for _, line := range strings.Split(string(groups), "\n") {
		p := strings.SplitN(line, ":", 3)
		if len(p) != 3 || !strings.HasPrefix(p[2], "/wisp/") {
			continue
		}
		if slices.Contains(strings.Split(p[1], ","), "cpuacct") {
			b, err := os.ReadFile("/sys/fs/cgroup/cpuacct" + p[2] + "/cpuacct.usage")
			if err == nil {
				n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
				return time.Duration(n)
			}
		}
		if p[0] == "0" {
			b, err := os.ReadFile("/sys/fs/cgroup" + p[2] + "/cpu.stat")
			if err == nil {
				var usec int64
				fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "usage_usec %d", &usec)
				return time.Duration(usec) * time.Microsecond
			}
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		d.t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// TestMeter: on both backends, what the meter reads matches what the
// sprite did: CPU burnt (against the guest's own count), memory held,
// bytes written to its disk (and a checkpoint of unchanged data costing
// nothing), bytes received; a sleeping sprite accrues only storage; the
// totals survive a daemon kill -9; a CPU cap puts the sprite to sleep and
// refuses its wake with the reason until raised.
func TestMeter(t *testing.T) {
	out := nettest.Start(t, testNetCIDR)
	for _, backend := range backends() {
		t.Run(backend, func(t *testing.T) {
			d := newDaemon(t, backend, "--meter-interval", "1s", "--hosts-file", out.Hosts, "--dns-upstream", out.DNS)
			d.ok("create", "m", "--memory", "768")
			d.waitTicks("m", 2)

			// CPU: a 10 s busy loop, against the kernel's count for the
			// sprite over the same span (on an idle host that is 10 s;
			// on a busy one, what the sprite got).
			before := d.waitTicks("m", 1)
			k0 := d.hostCPU("m")
			burnt := d.guestCPU("m", `timeout 10 sh -c 'while :; do :; done'`)
			k1 := d.hostCPU("m")
			after := d.waitTicks("m", 2)
			k2 := d.hostCPU("m")
			got := after.CPUSeconds - before.CPUSeconds
			t.Logf("%s: 10 s busy loop: the guest counted %.2f CPU-s, the host kernel %.2f (%.2f by the next samples), the meter %.2f",
				backend, burnt.Seconds(), (k1 - k0).Seconds(), (k2 - k0).Seconds(), got)
			if k1-k0 < time.Second {
				t.Fatalf("the busy loop got only %v of CPU in 10 s", k1-k0)
			}
			if got < (k1-k0).Seconds()-1.5 || got > (k2-k0).Seconds()+1.5 {
				t.Errorf("CPU: the meter read %.2f s, the kernel counted %.2f-%.2f s (want within 1.5 s)", got, (k1 - k0).Seconds(), (k2 - k0).Seconds())
			}

			// Memory: 300 MiB held in the guest's tmpfs.
			base := d.live("m").MemoryBytes
			d.ok("exec", "m", "--user", "root", "--", "dd", "if=/dev/zero", "of=/dev/shm/hold", "bs=1M", "count=300")
			d.waitTicks("m", 2)
			held := float64(d.live("m").MemoryBytes-base) / (1 << 20)
			t.Logf("%s: memory %d MiB before, +%.0f MiB holding 300 MiB", backend, base>>20, held)
			if held < 240 || held > 360 {
				t.Errorf("memory: holding 300 MiB raised the reading by %.0f MiB (want within 20%%)", held)
			}
			d.ok("exec", "m", "--user", "root", "--", "rm", "/dev/shm/hold")

			// Storage: 100 MB written and synced, then a checkpoint.
			d.waitTicks("m", 4) // a storage walk (every 3 samples) before
			s0 := d.live("m").StorageBytes
			d.ok("exec", "m", "--", "sh", "-c", "head -c 100000000 /dev/urandom > /var/tmp/big && sync")
			var s1 int64
			waitFor(t, 60*time.Second, "storage to grow", func() bool { s1 = d.live("m").StorageBytes; return s1 > s0+50e6 })
			d.waitTicks("m", 4) // and one more walk, after writeback
			s1 = d.live("m").StorageBytes
			t.Logf("%s: storage %d -> %d bytes after 100 MB", backend, s0, s1)
			if grew := float64(s1-s0) / 1e6; grew < 90 || grew > 110 {
				du, _ := exec.Command("sh", "-c", "du -ak "+filepath.Join(d.dir, "data")+" | sort -n | tail -15").CombinedOutput()
				t.Errorf("storage: 100 MB written raised it by %.1f MB (want 100 +/- 10); the data dir:\n%s", grew, du)
			}
			d.ok("checkpoint", "create", "m")
			d.waitTicks("m", 4)
			s2 := d.live("m").StorageBytes
			t.Logf("%s: a checkpoint added %d bytes", backend, s2-s1)
			if s2-s1 > 1<<20 {
				t.Errorf("storage: a checkpoint of unchanged data added %d bytes (want under 1 MiB)", s2-s1)
			}

			// Network: 50 MB received.
			n0 := d.usage("m").NetRxBytes
			d.ok("exec", "m", "--", "sh", "-c", fmt.Sprintf(`printf 'GET /bytes?n=50000000 HTTP/1.0\r\n\r\n' | nc %s 80 | wc -c`, netip.AddrPortFrom(nettest.OutsideIP, 80).Addr()))
			after = d.waitTicks("m", 2)
			rx := float64(after.NetRxBytes-n0) / 1e6
			t.Logf("%s: 50 MB fetched, the meter read %.2f MB in", backend, rx)
			if rx < 50 || rx > 52.5 {
				t.Errorf("network: a 50 MB transfer read as %.2f MB (want within 5%%)", rx)
			}

			// Asleep: CPU and memory stand still while storage accrues.
			d.ok("sleep", "m")
			asleep := d.waitTicks("m", 1)
			later := d.waitTicks("m", 3)
			if later.CPUSeconds != asleep.CPUSeconds || later.MemoryGiBSeconds != asleep.MemoryGiBSeconds {
				t.Errorf("a sleeping sprite accrued CPU or memory: %+v -> %+v", asleep, later)
			}

			// kill -9: the totals are still there.
			d.kill9AndRestart()
			if again := d.usage("m"); again.CPUSeconds < later.CPUSeconds || again.NetRxBytes < later.NetRxBytes {
				t.Errorf("after kill -9: %+v, before %+v", again, later)
			}

			// A cap: the sprite is put to sleep and refuses to wake.
			cpu := d.usage("m").CPUSeconds
			d.ok("set", "m", fmt.Sprintf("cap.cpu_seconds=%.1f", cpu+2))
			d.ok("exec", "m", "--", "true") // wakes it
			d.wisp(nil, "exec", "m", "--", "timeout", "60", "sh", "-c", "while :; do :; done")
			waitFor(t, 60*time.Second, "the capped sprite to sleep", func() bool { return d.info("m").State == "sleeping" })
			d.fails("cap reached", "exec", "m", "--", "true")
			if info := d.ok("info", "m"); !strings.Contains(info, "cap reached") {
				t.Errorf("wisp info does not say why it sleeps:\n%s", info)
			}
			d.ok("set", "m", "cap.none")
			d.ok("exec", "m", "--", "true")
		})
	}
}
