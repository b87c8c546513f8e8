package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/vmm"
)

// NetnsDir is where named network namespaces are bind-mounted (as by
// `ip netns`, which can then inspect them).
const NetnsDir = "/var/run/netns"

// Names inside a sprite's namespace.
const (
	nsLink   = "eth0" // the namespace's end of the veth pair
	tapLink  = "tap0" // a VM's tap
	bridgeNS = "br0"  // joins eth0 and tap0 for a VM
)

func (n *Network) nsName(id string) string   { return n.cfg.Name + "-" + id }
func (n *Network) nsPath(id string) string   { return filepath.Join(NetnsDir, n.nsName(id)) }
func (n *Network) hostLink(id string) string { return n.cfg.LinkPrefix + id }

// InNetns runs fn on an OS thread of its own inside the network namespace
// at path (sockets made there stay in it). The thread is thrown away
// afterwards rather than trusted back into another namespace.
func InNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		ns, err := netns.GetFromPath(path)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", path, err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// ensureNetns makes the named namespace unless it exists.
func (n *Network) ensureNetns(id string) error {
	path := n.nsPath(id)
	if isNetns(path) {
		return nil
	}
	os.Remove(path) // a file left by a half-made namespace
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is left in the new namespace
		ns, err := netns.NewNamed(n.nsName(id))
		if err == nil {
			ns.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("make network namespace %s: %w", n.nsName(id), err)
	}
	return nil
}

// isNetns reports whether path is a mounted network namespace.
func isNetns(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// deleteNetns unmounts and removes a namespace; links in it go with it.
func deleteNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// sysctl writes value to /proc/sys/<key> of the calling thread's namespace.
func sysctl(key, value string) error {
	return os.WriteFile(filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/")), []byte(value), 0o644)
}

// ensureLinks makes the sprite's veth pair and, inside its namespace, the
// layout its backend needs (tap: a tap bridged to eth0; else eth0 alone,
// for a sandbox's stack: see AddressVeth). Idempotent: it repairs what is
// missing.
func (n *Network) ensureLinks(id string, gw netip.Addr, mac string, tap bool) error {
	path := n.nsPath(id)
	host := n.hostLink(id)
	hostGW := &netlink.Addr{IPNet: &net.IPNet{IP: gw.AsSlice(), Mask: net.CIDRMask(30, 32)}}
	link, err := netlink.LinkByName(host)
	if err != nil {
		nsh, err := netns.GetFromPath(path)
		if err != nil {
			return err
		}
		defer nsh.Close()
		// The namespace may hold the other end of a pair whose host end
		// is gone (it cannot: a veth pair goes as one) or a stale eth0.
		InNetns(path, func() error {
			if l, err := netlink.LinkByName(nsLink); err == nil {
				netlink.LinkDel(l)
			}
			return nil
		})
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MTU: 1500}, PeerName: nsLink, PeerNamespace: netlink.NsFd(int(nsh))}
		if hw, err := net.ParseMAC(mac); err == nil && !tap {
			veth.PeerHardwareAddr = hw // the sandbox's NIC takes this address
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("make link %s: %w", host, err)
		}
		if link, err = netlink.LinkByName(host); err != nil {
			return err
		}
	}
	// The host's end: no IPv6, ARP answers only for its own address,
	// strict reverse-path filtering (no spoofed sources).
	for k, v := range map[string]string{
		"net.ipv6.conf." + host + ".disable_ipv6": "1",
		"net.ipv4.conf." + host + ".arp_ignore":   "1",
		"net.ipv4.conf." + host + ".arp_announce": "2",
		"net.ipv4.conf." + host + ".rp_filter":    "1",
	} {
		if err := sysctl(k, v); err != nil {
			return err
		}
	}
	if err := netlink.AddrReplace(link, hostGW); err != nil {
		return fmt.Errorf("address %s on %s: %w", gw, host, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return err
	}
	return InNetns(path, func() error {
		if err := sysctl("net.ipv6.conf.all.disable_ipv6", "1"); err != nil {
			return err
		}
		sysctl("net.ipv6.conf.default.disable_ipv6", "1")
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		eth, err := netlink.LinkByName(nsLink)
		if err != nil {
			return err
		}
		if tap {
			return ensureTapBridge(eth)
		}
		// The address goes on eth0 only right before a sandbox starts
		// (AddressVeth): runsc takes it off when it takes the link over,
		// and it must not come back while the sandbox runs, or the
		// namespace's own stack would answer (reset) the sandbox's
		// connections.
		return netlink.LinkSetUp(eth)
	})
}

// AddressVeth puts the guest's address and default route on the veth end
// in its namespace, for a sandbox about to start (or be restored) to take
// over: runsc copies the link's addresses and routes into its own network
// stack and removes them from the link.
func AddressVeth(n *vmm.Net) error {
	a, err := netlink.ParseAddr(n.Address)
	if err != nil {
		return err
	}
	gw := net.ParseIP(n.Gateway)
	return InNetns(n.Netns, func() error {
		eth, err := netlink.LinkByName(n.Link)
		if err != nil {
			return err
		}
		if err := netlink.AddrReplace(eth, a); err != nil {
			return fmt.Errorf("address %s on %s: %w", n.Address, n.Link, err)
		}
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw}); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
		return nil
	})
}

// ensureTapBridge makes tap0 (persistent, so a VMM can open it again after
// a sleep) and br0 joining it to eth0, inside the calling thread's
// namespace.
func ensureTapBridge(eth netlink.Link) error {
	tap, err := netlink.LinkByName(tapLink)
	if err != nil {
		t := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: tapLink}, Mode: netlink.TUNTAP_MODE_TAP,
			Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_ONE_QUEUE}
		if err := netlink.LinkAdd(t); err != nil {
			return fmt.Errorf("make %s: %w", tapLink, err)
		}
		if tap, err = netlink.LinkByName(tapLink); err != nil {
			return err
		}
	}
	br, err := netlink.LinkByName(bridgeNS)
	if err != nil {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeNS}}); err != nil {
			return fmt.Errorf("make %s: %w", bridgeNS, err)
		}
		if br, err = netlink.LinkByName(bridgeNS); err != nil {
			return err
		}
	}
	for _, l := range []netlink.Link{eth, tap} {
		if l.Attrs().MasterIndex != br.Attrs().Index {
			if err := netlink.LinkSetMaster(l, br); err != nil {
				return err
			}
		}
	}
	// eth0 holds no address here: the guest's virtio-net does.
	addrs, _ := netlink.AddrList(eth, netlink.FAMILY_V4)
	for _, a := range addrs {
		netlink.AddrDel(eth, &a)
	}
	for _, l := range []netlink.Link{eth, tap, br} {
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
	}
	return nil
}

// OpenTap opens the tap named name inside the namespace at nsPath, for a
// VMM to be handed as a file descriptor.
func OpenTap(nsPath, name string) (*os.File, error) {
	var f *os.File
	err := InNetns(nsPath, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_ONE_QUEUE)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("attach to %s: %w", name, err)
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	return f, err
}

// linkStats reads the counters of the host's end of a sprite's link.
func linkStats(name string) (Stats, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return Stats{}, err
	}
	st := l.Attrs().Statistics
	if st == nil {
		return Stats{}, nil
	}
	return Stats{RxBytes: st.TxBytes, TxBytes: st.RxBytes, Link: l.Attrs().Index}, nil
}
