package guest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/agent/proto"
)

// mount is one mount of the init sequence, as data.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// early mounts happen in the initramfs, late ones in the switched root.
var (
	earlyMounts = []mount{
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	}
	lateMounts = []mount{
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	}
)

func doMounts(ms []mount) error {
	for _, m := range ms {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

// VMConfig is what init needs to know, read from the kernel command line
// (unknown key=value words reach PID 1 as environment variables).
type VMConfig struct {
	Hostname  string // wisp_name
	MachineID string // wisp_machine_id
	RootDev   string // wisp_root, default /dev/vda
	Address   string // wisp_addr: the sprite's address with prefix; empty: no network
	Gateway   string // wisp_gw: the host's end, also the DNS server
}

// VMConfigFromEnv reads the config PID 1 received.
func VMConfigFromEnv() VMConfig {
	c := VMConfig{Hostname: os.Getenv("wisp_name"), MachineID: os.Getenv("wisp_machine_id"), RootDev: os.Getenv("wisp_root"),
		Address: os.Getenv("wisp_addr"), Gateway: os.Getenv("wisp_gw")}
	if c.RootDev == "" {
		c.RootDev = "/dev/vda"
	}
	return c
}

// sysctls are the kernel settings of a VM guest (there is no sysctl
// service: the agent is init). Overcommit as containers have it: runtimes
// such as Bun and JavaScriptCore (Claude Code's native binary) reserve far
// more address space than a small VM's RAM and die of SIGSEGV when the
// kernel's heuristic refuses the reservation.
var sysctls = map[string]string{
	"/proc/sys/vm/overcommit_memory": "1",
}

// InitVM brings a VM guest up from the initramfs: mounts, modules, root
// disk, switch of root, hostname, network.
func InitVM(log *slog.Logger, c VMConfig) error {
	if err := doMounts(earlyMounts); err != nil {
		return err
	}
	if err := loadModules(log, "/modules"); err != nil {
		return err
	}
	if err := waitFor(c.RootDev, 10*time.Second); err != nil {
		return err
	}
	if err := os.MkdirAll("/newroot", 0o755); err != nil {
		return err
	}
	if err := unix.Mount(c.RootDev, "/newroot", "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount root %s: %w", c.RootDev, err)
	}
	for _, m := range earlyMounts {
		t := "/newroot" + m.target
		os.MkdirAll(t, 0o755)
		if err := unix.Mount(m.target, t, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s: %w", m.target, err)
		}
	}
	// Free the initramfs' bulk before leaving it.
	os.RemoveAll("/modules")
	if err := os.Chdir("/newroot"); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	if err := doMounts(lateMounts); err != nil {
		return err
	}
	if _, err := os.Lstat("/dev/ptmx"); err != nil {
		os.Symlink("pts/ptmx", "/dev/ptmx")
	}
	if err := setIdentity(proto.Request{Hostname: c.Hostname, MachineID: c.MachineID}); err != nil {
		log.Warn("identity", "err", err)
	}
	for path, v := range sysctls {
		if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
			log.Warn("sysctl", "path", path, "err", err)
		}
	}
	if err := ConfigureNetwork(c.Address, c.Gateway); err != nil {
		log.Warn("network", "err", err)
	}
	return nil
}

// SetHostname sets the kernel hostname and keeps /etc/hostname and
// /etc/hosts in step, so tools that resolve their own name work.
func SetHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return err
	}
	os.WriteFile("/etc/hostname", []byte(name+"\n"), 0o644)
	hosts, _ := os.ReadFile("/etc/hosts")
	line := "127.0.1.1\t" + name
	var out []string
	for _, l := range strings.Split(strings.TrimRight(string(hosts), "\n"), "\n") {
		if strings.HasPrefix(l, "127.0.1.1") || l == "" {
			continue
		}
		out = append(out, l)
	}
	if len(out) == 0 {
		out = append(out, "127.0.0.1\tlocalhost")
	}
	out = append(out, line)
	return os.WriteFile("/etc/hosts", []byte(strings.Join(out, "\n")+"\n"), 0o644)
}

// loadModules loads dir/*.ko in the order listed in dir/order.
func loadModules(log *slog.Logger, dir string) error {
	f, err := os.Open(filepath.Join(dir, "order"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" {
			continue
		}
		m, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(m.Fd()), "", 0)
		m.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			log.Warn("load module", "module", name, "err", err)
		}
	}
	return sc.Err()
}

// waitFor waits for a device node to appear (devtmpfs creates it when the
// driver probes the device).
func waitFor(path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %s", path, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ConfigureNetwork gives eth0 the sprite's address (with prefix, e.g.
// "10.229.0.2/30") and a default route through gw, its host's end, which
// also answers its DNS. What is already right is left alone (under gVisor
// the sandbox's network stack comes up configured), other IPv4 addresses
// on eth0 go (a guest restored from another's memory). An empty address
// means no network: only the loopback comes up.
func ConfigureNetwork(address, gw string) error {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo)
	}
	if address == "" {
		return nil
	}
	want, err := netlink.ParseAddr(address)
	if err != nil {
		return invalid("address %q: %v", address, err)
	}
	gwIP := net.ParseIP(gw)
	if gwIP == nil {
		return invalid("gateway %q", gw)
	}
	eth, err := netlink.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("no eth0: %w", err)
	}
	have := false
	addrs, _ := netlink.AddrList(eth, netlink.FAMILY_V4)
	for _, a := range addrs {
		if a.IPNet.String() == want.IPNet.String() {
			have = true
			continue
		}
		if err := netlink.AddrDel(eth, &a); err != nil {
			return fmt.Errorf("remove address %s: %w", a.IPNet, err)
		}
	}
	if !have {
		if err := netlink.AddrAdd(eth, want); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("address %s: %w", address, err)
		}
	}
	if err := netlink.LinkSetUp(eth); err != nil {
		return err
	}
	routes, _ := netlink.RouteList(eth, netlink.FAMILY_V4)
	haveRoute := false
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw.Equal(gwIP) {
			haveRoute = true
		}
	}
	if !haveRoute {
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gwIP}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	return writeResolvConf(gw)
}

// writeResolvConf points the resolver at the sprite's gateway. A symlink
// there (systemd-resolved's) is replaced by a file.
func writeResolvConf(gw string) error {
	const path = "/etc/resolv.conf"
	content := "# written by wisp-agent: the sprite's DNS is its gateway\nnameserver " + gw + "\n"
	if b, err := os.ReadFile(path); err == nil && string(b) == content {
		return nil
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		os.Remove(path)
	}
	tmp := path + ".wisp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// OpenVirtioPort returns an opener for the virtio-serial port named name.
func OpenVirtioPort(name string) func() (io.ReadWriteCloser, error) {
	return func() (io.ReadWriteCloser, error) {
		ms, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, m := range ms {
			b, err := os.ReadFile(m)
			if err != nil || strings.TrimSpace(string(b)) != name {
				continue
			}
			dev := "/dev/" + filepath.Base(filepath.Dir(m))
			return os.OpenFile(dev, os.O_RDWR, 0)
		}
		return nil, fmt.Errorf("virtio port %q not found", name)
	}
}

// Shutdown syncs and remounts the root read-only.
func ShutdownRoot() error {
	unix.Sync()
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return err
	}
	return nil
}

// setMAC gives a network interface a new hardware address (a fork's own);
// an interface that does not exist (gVisor without network) is skipped.
func setMAC(ifname, mac string) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return invalid("mac %q: %v", mac, err)
	}
	link, err := netlink.LinkByName(ifname)
	if err != nil || link.Attrs().HardwareAddr.String() == hw.String() {
		return nil
	}
	return netlink.LinkSetHardwareAddr(link, hw)
}
