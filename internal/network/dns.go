package network

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// A sprite's DNS: wispd answers on the sprite's gateway address, names of
// the host's hosts file first (as dnsmasq does), the rest forwarded to the
// host's resolvers. Under an allowlist a name the policy does not allow is
// REFUSED, and the IPv4 addresses answered for an allowed one are learned
// (reachable for the answer's TTL). AAAA questions get an empty answer:
// IPv6 is off in sprites, and an empty answer makes clients use IPv4 at
// once. Everything read from the guest is bounded: one question a message,
// at most maxInflight questions at a time per sprite, and every exchange
// with an upstream within dnsTimeout.

const maxInflight = 64

// resolver is shared by every sprite's server: the hosts file and the
// upstreams.
type resolver struct {
	upstreams []string
	hostsPath string
	log       *slog.Logger

	mu        sync.Mutex
	hostsMod  time.Time
	hostsSize int64
	hosts     map[string][]netip.Addr
}

func newResolver(log *slog.Logger, upstreams []string, hostsPath string) (*resolver, error) {
	if len(upstreams) == 0 {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("DNS upstreams: %w", err)
		}
		for _, s := range cc.Servers {
			upstreams = append(upstreams, net.JoinHostPort(s, cc.Port))
		}
	}
	if len(upstreams) == 0 {
		return nil, errors.New("DNS upstreams: /etc/resolv.conf names no nameserver")
	}
	return &resolver{upstreams: upstreams, hostsPath: hostsPath, log: log}, nil
}

// lookupHosts returns the hosts file's IPv4 addresses for name, re-reading
// the file when it changed.
func (r *resolver) lookupHosts(name string) ([]netip.Addr, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if fi, err := os.Stat(r.hostsPath); err == nil && (!fi.ModTime().Equal(r.hostsMod) || fi.Size() != r.hostsSize) {
		r.hostsMod, r.hostsSize = fi.ModTime(), fi.Size()
		r.hosts = readHosts(r.hostsPath)
	}
	a, ok := r.hosts[name]
	return a, ok
}

// readHosts parses a hosts file: "ADDRESS NAME [NAME...]" lines, # comments.
// Only IPv4 addresses are kept; a name listed with only IPv6 addresses is
// known (answered empty), so it does not leak to the upstreams.
func readHosts(path string) map[string][]netip.Addr {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string][]netip.Addr{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fs := strings.Fields(line)
		if len(fs) < 2 {
			continue
		}
		a, err := netip.ParseAddr(fs[0])
		if err != nil {
			continue
		}
		for _, n := range fs[1:] {
			n = strings.TrimSuffix(strings.ToLower(n), ".")
			if a.Is4() {
				out[n] = append(out[n], a)
			} else if _, ok := out[n]; !ok {
				out[n] = nil
			}
		}
	}
	return out
}

// forward sends q to the upstreams in turn until one answers.
func (r *resolver) forward(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	errs := []error{errors.New("no upstream answered")}
	for _, up := range r.upstreams {
		c := &dns.Client{Timeout: dnsTimeout}
		resp, _, err := c.ExchangeContext(ctx, q, up)
		if err == nil && resp.Truncated {
			c.Net = "tcp"
			resp, _, err = c.ExchangeContext(ctx, q, up)
		}
		if err == nil {
			return resp, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// dnsServer answers one sprite's queries on its gateway address.
type dnsServer struct {
	r      *resolver
	policy func() Policy
	// learn is told the addresses answered for an allowed name under an
	// allowlist, and how long they stay reachable.
	learn    func(name string, addrs []netip.Addr, ttl time.Duration)
	inflight chan struct{}
	servers  []*dns.Server
}

// serveDNS starts a server for one sprite on addr:53, UDP and TCP.
func serveDNS(r *resolver, addr netip.Addr, policy func() Policy, learn func(string, []netip.Addr, time.Duration)) (*dnsServer, error) {
	s := &dnsServer{r: r, policy: policy, learn: learn, inflight: make(chan struct{}, maxInflight)}
	ap := netip.AddrPortFrom(addr, 53).String()
	pc, err := net.ListenPacket("udp4", ap)
	if err != nil {
		return nil, fmt.Errorf("DNS on %s: %w", ap, err)
	}
	ln, err := net.Listen("tcp4", ap)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("DNS on %s: %w", ap, err)
	}
	h := dns.HandlerFunc(s.serve)
	s.servers = []*dns.Server{
		{PacketConn: pc, Handler: h, UDPSize: dns.DefaultMsgSize},
		{Listener: ln, Handler: h, ReadTimeout: dnsTimeout, WriteTimeout: dnsTimeout, IdleTimeout: func() time.Duration { return dnsTimeout }, MaxTCPQueries: 16},
	}
	for _, srv := range s.servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
	}
	return s, nil
}

func (s *dnsServer) close() {
	for _, srv := range s.servers {
		srv.Shutdown()
	}
}

func (s *dnsServer) serve(w dns.ResponseWriter, req *dns.Msg) {
	select {
	case s.inflight <- struct{}{}:
		defer func() { <-s.inflight }()
	default:
		return // too many at once: the client retries
	}
	w.WriteMsg(s.answer(req))
}

// answer is the reply to req.
func (s *dnsServer) answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 || req.Question[0].Qclass != dns.ClassINET {
		return m.SetRcode(req, dns.RcodeFormatError)
	}
	q := req.Question[0]
	name := strings.TrimSuffix(strings.ToLower(q.Name), ".")
	p := s.policy()
	if !p.AllowsName(name) {
		return m.SetRcode(req, dns.RcodeRefused)
	}
	if addrs, ok := s.r.lookupHosts(name); ok {
		m.SetReply(req)
		m.Authoritative = true
		if q.Qtype == dns.TypeA {
			for _, a := range addrs {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: a.AsSlice()})
			}
			s.learnFrom(p, name, addrs, 60)
		}
		return m
	}
	if q.Qtype == dns.TypeAAAA {
		return m.SetReply(req)
	}
	fwd := new(dns.Msg)
	fwd.SetQuestion(q.Name, q.Qtype)
	fwd.RecursionDesired = true
	ctx, cancel := context.WithTimeout(context.Background(), 2*dnsTimeout)
	defer cancel()
	resp, err := s.r.forward(ctx, fwd)
	if err != nil {
		s.r.log.Debug("DNS upstream failed", "name", name, "err", err)
		return m.SetRcode(req, dns.RcodeServerFailure)
	}
	resp.Id = req.Id
	var addrs []netip.Addr
	ttl := uint32(maxLearn / time.Second)
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
				addrs = append(addrs, ip)
				ttl = min(ttl, a.Hdr.Ttl)
			}
		}
	}
	s.learnFrom(p, name, addrs, ttl)
	return resp
}

func (s *dnsServer) learnFrom(p Policy, name string, addrs []netip.Addr, ttl uint32) {
	if p.Mode != AllowList || len(addrs) == 0 || s.learn == nil {
		return
	}
	d := min(max(time.Duration(ttl)*time.Second, minLearn), maxLearn)
	s.learn(name, addrs, d)
}
