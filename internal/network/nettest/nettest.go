//go:build linux

// Package nettest makes an "outside" for network tests: a namespace of
// the test's own, joined to the host by a veth, with HTTP servers at an
// outside address (198.51.100.2), a second one (198.51.100.3), a private
// one (172.16.55.5) and the link-local metadata address
// (169.254.169.254), and a DNS server at 198.51.100.2:53. The private and
// metadata addresses are routed to it only for traffic from the sprites'
// range (a policy-routing rule of the test's), so the host's own routes
// are untouched, and a block of them is proven against a server that is
// really there. No traffic leaves the machine.
package nettest

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The outside's addresses.
var (
	OutsideIP = netip.MustParseAddr("198.51.100.2")
	HostIP    = netip.MustParseAddr("198.51.100.1") // the host's end of the outside's link
	OtherIP   = netip.MustParseAddr("198.51.100.3")
	PrivateIP = netip.MustParseAddr("172.16.55.5")
	MetaIP    = netip.MustParseAddr("169.254.169.254")
)

// Every server answers "hello from ADDR" on port 80; GET /stream sends a
// line every 50 ms until the client goes, and GET /bytes?n=N sends N
// bytes. The DNS server answers every A question with OtherIP.
const (
	nsName   = "wisptest-outside"
	hostLink = "wto-host"
	table    = 7231
)

// Outside is a running outside.
type Outside struct {
	// Hosts is a hosts file naming outside.test (OutsideIP) and
	// other.test (OtherIP), for the sprites' DNS.
	Hosts string
	// DNS is the upstream DNS server, host:port.
	DNS string
}

// Start makes the outside for sprites in cidr; t.Cleanup removes it. It
// waits while another test (of any package) holds the outside.
func Start(t testing.TB, cidr netip.Prefix) *Outside {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	o, stop, err := StartOutside(cidr, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return o
}

// StartOutside makes the outside (for benchmarks: Start is for tests),
// writing its hosts file into dir. Traffic from cidr to the private and
// metadata addresses is routed to it; with an invalid cidr, none is.
// stop removes it all.
func StartOutside(cidr netip.Prefix, dir string) (o *Outside, stop func(), err error) {
	// One outside at a time on this machine: go test runs packages in
	// parallel, and every outside has the same names and addresses.
	unlock, err := lockOutside()
	if err != nil {
		return nil, nil, err
	}
	undo := []func(){unlock}
	stop = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	path := filepath.Join(netnsDir, nsName)
	remove(path)
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return nil, nil, err
	}
	errc := make(chan error, 1)
	go func() {
		// This thread stays in the new namespace and ends with the goroutine.
		lockThread()
		ns, err := netns.NewNamed(nsName)
		if err == nil {
			ns.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		return nil, nil, err
	}
	undo = append(undo, func() { remove(path) })
	nsf, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer nsf.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostLink}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(nsf.Fd()))}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, nil, err
	}
	host, err := netlink.LinkByName(hostLink)
	if err != nil {
		return nil, nil, err
	}
	netlink.AddrAdd(host, addr(HostIP, 24))
	netlink.LinkSetUp(host)
	servers := []netip.Addr{OutsideIP, OtherIP, PrivateIP, MetaIP}
	var lns []net.Listener
	var dnsSrv *dns.Server
	err = inNetns(path, func() error {
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		lo, _ := netlink.LinkByName("lo")
		netlink.LinkSetUp(lo)
		for _, a := range servers {
			bits := 24
			if a == PrivateIP || a == MetaIP {
				bits = 32
			}
			if err := netlink.AddrAdd(eth, addr(a, bits)); err != nil {
				return err
			}
		}
		netlink.LinkSetUp(eth)
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: HostIP.AsSlice()}); err != nil {
			return err
		}
		for _, a := range servers {
			ln, err := net.Listen("tcp4", netip.AddrPortFrom(a, 80).String())
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		pc, err := net.ListenPacket("udp4", netip.AddrPortFrom(OutsideIP, 53).String())
		if err != nil {
			return err
		}
		dnsSrv = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg).SetReply(r)
			if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: OtherIP.AsSlice()})
			}
			w.WriteMsg(m)
		})}
		go dnsSrv.ActivateAndServe()
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	undo = append(undo, func() { dnsSrv.Shutdown() })
	for _, ln := range lns {
		srv := &http.Server{Handler: handler(ln.Addr().String())}
		go srv.Serve(ln)
		undo = append(undo, func() { srv.Close() })
	}
	if cidr.IsValid() {
		// The private and metadata addresses, through the outside, for
		// the sprites' range only.
		for _, a := range []netip.Addr{PrivateIP, MetaIP} {
			r := &netlink.Route{LinkIndex: host.Attrs().Index, Dst: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}, Gw: OutsideIP.AsSlice(), Table: table}
			if err := netlink.RouteReplace(r); err != nil {
				return nil, nil, err
			}
		}
		rule := netlink.NewRule()
		rule.Src = &net.IPNet{IP: cidr.Addr().AsSlice(), Mask: net.CIDRMask(cidr.Bits(), 32)}
		rule.Table = table
		rule.Priority = table
		netlink.RuleDel(rule)
		if err := netlink.RuleAdd(rule); err != nil {
			return nil, nil, err
		}
		undo = append(undo, func() { netlink.RuleDel(rule) })
	}
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n198.51.100.2 outside.test\n198.51.100.3 other.test\n"), 0o644); err != nil {
		return nil, nil, err
	}
	return &Outside{Hosts: hosts, DNS: netip.AddrPortFrom(OutsideIP, 53).String()}, stop, nil
}

func handler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "hello from %s\n", name) })
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(w, "%d\n", i); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		var n int64
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		n = min(n, 1<<30)
		w.Header().Set("Content-Length", fmt.Sprint(n))
		buf := make([]byte, 64<<10)
		for n > 0 {
			k := min(n, int64(len(buf)))
			if _, err := w.Write(buf[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	return mux
}

func remove(path string) {
	if l, err := netlink.LinkByName(hostLink); err == nil {
		netlink.LinkDel(l)
	}
	unmount(path)
	os.Remove(path)
}

func addr(a netip.Addr, bits int) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}}
}

// Serve serves h at OutsideIP:port in the outside until t ends.
func Serve(t testing.TB, port int, h http.Handler) {
	t.Helper()
	var ln net.Listener
	err := inNetns(filepath.Join(netnsDir, nsName), func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(OutsideIP, uint16(port)).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// HostServer serves HTTP on 0.0.0.0 in the host's own namespace (what no
// sprite may reach) and returns its port.
func HostServer(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello from the host") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// HostAddrs are the host's IPv4 addresses but loopback: its main one, the
// outside link's, every sprite gateway.
func HostAddrs(t testing.TB) []netip.Addr {
	t.Helper()
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && !ip.IsLoopback() {
			out = append(out, ip)
		}
	}
	return out
}
