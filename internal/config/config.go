// Package config is wispd's one configuration struct: defaults, validation,
// and the environment knobs, in one place.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config configures wispd.
type Config struct {
	DataDir  string // metadata, images and sprites
	Socket   string // the API's unix socket
	Backend  string // auto, qemu or gvisor
	QEMU     string // the qemu-system-x86_64 binary
	QEMUUser string // QEMU drops to this user after start-up when wispd is root and a sprite has no uid of its own
	// VMMUIDs is "FIRST-LAST", the host uids (and gids) given to sprites'
	// VMMs, one of its own each (the first: warm snapshot builds).
	VMMUIDs string
	// AllowTCG offers the QEMU backend on a host without hardware KVM,
	// where QEMU emulates (TCG): slow, and not a security boundary.
	AllowTCG bool
	Runsc    string // the runsc binary; empty: look in the usual places
	Agent    string // the wisp-agent binary; empty: next to wispd
	Images   string // where images are kept; empty: in the storage pool, so sprite disks are reflinks of them
	BuildDir string // where image root trees are built (device nodes and exec allowed); empty: DataDir/build
	Cache    string // pinned downloads for image builds; empty: the user cache dir's wisp/downloads
	PoolGiB  int    // size of the storage pool file, where wisp makes one (sparse; growable)

	// Defaults for wisp create.
	CPUs      int
	MemoryMiB int
	DiskGiB   int
	Image     string
	Pids      int // process limit inside a sprite

	// Idle is how long a sprite may sit unused before it sleeps (0: never),
	// unless it says otherwise.
	Idle time.Duration
	// WarmSnapshots: create restores a saved, freshly booted sprite of its
	// kind instead of booting a kernel, where the backend can save.
	WarmSnapshots bool

	// Sprite networking (internal/network): off with Network false.
	Network  bool
	NetName  string   // names the nftables table and prefixes namespaces: one per daemon on a host
	NetCIDR  string   // sprites' addresses, a /30 each
	NetAllow []string // CIDRs let through the default deny list
	NetDeny  []string // CIDRs added to it
	DNS      []string // upstream DNS servers (host or host:port); empty: /etc/resolv.conf's
	Hosts    string   // hosts file answered first

	// The URL front door: HTTPAddr is where it listens ("" off); URLWait
	// bounds how long a request that wakes or starts a sprite waits for
	// its port to listen.
	HTTPAddr string
	URLWait  time.Duration
	// Metering: how often each sprite's use is sampled, and a JSON file of
	// prices (meter.Prices; "" the defaults).
	MeterInterval time.Duration
	Prices        string

	// Listen is where the API is served over TCP, every request behind a
	// bearer token ("" off).
	Listen string

	// Cluster mode (off when Etcd is empty): etcd endpoints for
	// membership and ownership, an S3-compatible store for sprite state
	// (credentials from the environment or S3Credentials, never flags),
	// this host's id (default: the hostname), and the URL other hosts
	// reach this host's API at (default: http://Listen).
	// QEMUCPU is the named CPU model QEMU uses under KVM ("" -cpu host).
	QEMUCPU string

	Etcd          []string
	S3            string
	S3Bucket      string
	S3Credentials string
	HostID        string
	Advertise     string
	// ClusterTTL is the lease of this host in etcd (default 10 s): how
	// long after losing etcd its sprites may be claimed elsewhere. CPUClass
	// overrides the CPU class this host advertises ("": its CPU model and
	// feature flags).
	ClusterTTL time.Duration
	CPUClass   string

	// Limits for wisp create.
	MaxCPUs      int
	MaxMemoryMiB int
	MaxDiskGiB   int
	MaxPids      int
}

// Default socket and data dir.
const (
	DefaultDataDir = "/var/lib/wisp"
	DefaultSocket  = "/run/wisp/wisp.sock"
)

// DefaultVMMUIDs lies above systemd's container range (524288-1879048191)
// and below 2^31, where no distribution allocates users.
const DefaultVMMUIDs = "2000000000-2000065535"

// UIDRange parses VMMUIDs into its first uid and how many there are.
func (c *Config) UIDRange() (first, count int, err error) {
	a, b, ok := strings.Cut(c.VMMUIDs, "-")
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || lo < 1000 || hi < lo+1 || hi >= 1<<31-1 {
		return 0, 0, fmt.Errorf("vmm uids %q: want FIRST-LAST, 1000 <= FIRST < LAST < 2147483647", c.VMMUIDs)
	}
	return lo, hi - lo + 1, nil
}

// Default returns the configuration with every default filled in.
func Default() Config {
	return Config{
		DataDir:       DefaultDataDir,
		Socket:        DefaultSocket,
		Backend:       "auto",
		QEMU:          "qemu-system-x86_64",
		QEMUUser:      "nobody",
		VMMUIDs:       DefaultVMMUIDs,
		PoolGiB:       200,
		CPUs:          1,
		MemoryMiB:     1024,
		DiskGiB:       10,
		Image:         "dev",
		Pids:          1024,
		Idle:          30 * time.Second,
		WarmSnapshots: true,
		Network:       true,
		NetName:       "wisp",
		NetCIDR:       "10.229.0.0/16",
		Hosts:         "/etc/hosts",
		HTTPAddr:      "127.0.0.1:7780",
		URLWait:       10 * time.Second,
		MeterInterval: 10 * time.Second,
		Listen:        "127.0.0.1:7781",
		MaxCPUs:       runtime.NumCPU(),
		MaxMemoryMiB:  hostMemMiB(),
		MaxDiskGiB:    1024,
		MaxPids:       8192,
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Etcd) > 0 {
		if c.S3 == "" || c.S3Bucket == "" {
			errs = append(errs, errors.New("cluster mode needs an object store: --s3 URL and --s3-bucket NAME"))
		}
		if c.Listen == "" && c.Advertise == "" {
			errs = append(errs, errors.New("cluster mode needs the API over TCP (--listen) for the other hosts"))
		}
		if c.ClusterTTL != 0 && c.ClusterTTL < 2*time.Second {
			errs = append(errs, fmt.Errorf("--cluster-ttl %v: at least 2s", c.ClusterTTL))
		}
	} else if c.S3 != "" || c.HostID != "" {
		errs = append(errs, errors.New("--s3 and --host-id are for cluster mode: add --cluster etcd=URL"))
	}
	if !filepath.IsAbs(c.DataDir) {
		errs = append(errs, fmt.Errorf("data dir %q must be absolute", c.DataDir))
	}
	if c.Socket == "" {
		errs = append(errs, errors.New("socket path is empty"))
	}
	if !slices.Contains([]string{"auto", "qemu", "gvisor"}, c.Backend) {
		errs = append(errs, fmt.Errorf("backend %q: want auto, qemu or gvisor", c.Backend))
	}
	if c.CPUs < 1 || c.CPUs > c.MaxCPUs {
		errs = append(errs, fmt.Errorf("default cpus %d out of range 1-%d", c.CPUs, c.MaxCPUs))
	}
	if c.MemoryMiB < 128 || c.MemoryMiB > c.MaxMemoryMiB {
		errs = append(errs, fmt.Errorf("default memory %d MiB out of range 128-%d", c.MemoryMiB, c.MaxMemoryMiB))
	}
	if c.DiskGiB < 1 || c.DiskGiB > c.MaxDiskGiB {
		errs = append(errs, fmt.Errorf("default disk %d GiB out of range 1-%d", c.DiskGiB, c.MaxDiskGiB))
	}
	if c.Pids < 16 || c.Pids > c.MaxPids {
		errs = append(errs, fmt.Errorf("default pids %d out of range 16-%d", c.Pids, c.MaxPids))
	}
	if _, _, err := c.UIDRange(); err != nil {
		errs = append(errs, err)
	}
	if c.PoolGiB < 1 {
		errs = append(errs, fmt.Errorf("pool size %d GiB: want at least 1", c.PoolGiB))
	}
	if c.Network {
		if !regexp.MustCompile(`^[a-z][a-z0-9]{1,11}$`).MatchString(c.NetName) {
			errs = append(errs, fmt.Errorf("net name %q: want 2-12 lower-case letters and digits", c.NetName))
		}
		if p, err := netip.ParsePrefix(c.NetCIDR); err != nil || !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 28 {
			errs = append(errs, fmt.Errorf("net cidr %q: want an IPv4 CIDR from /8 to /28", c.NetCIDR))
		}
		for _, list := range [][]string{c.NetAllow, c.NetDeny} {
			for _, a := range list {
				if p, err := netip.ParsePrefix(a); err != nil || !p.Addr().Is4() {
					errs = append(errs, fmt.Errorf("net allow/deny %q: want an IPv4 CIDR", a))
				}
			}
		}
		for _, d := range c.DNS {
			if _, err := c.dnsAddr(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			errs = append(errs, fmt.Errorf("http addr %q: want host:port (127.0.0.1:7780), or empty for no front door", c.HTTPAddr))
		}
	}
	if c.MeterInterval < time.Second || c.MeterInterval > 10*time.Minute {
		errs = append(errs, fmt.Errorf("meter interval %s: want 1s to 10m", c.MeterInterval))
	}
	if c.URLWait <= 0 || c.URLWait > 5*time.Minute {
		errs = append(errs, fmt.Errorf("url wait %s: want more than 0 and at most 5m", c.URLWait))
	}
	if c.Idle < 0 {
		errs = append(errs, fmt.Errorf("idle %s must not be negative (0 means never)", c.Idle))
	}
	return errors.Join(errs...)
}

// BuildPath is where image root trees are built: on the data dir's own
// filesystem (the pool below it is mounted nodev), unless configured.
func (c *Config) BuildPath() string {
	if c.BuildDir != "" {
		return c.BuildDir
	}
	return filepath.Join(c.DataDir, "build")
}

// CachePath is where image builds keep their pinned downloads.
func (c *Config) CachePath() string {
	if c.Cache != "" {
		return c.Cache
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return filepath.Join(c.DataDir, "downloads")
	}
	return filepath.Join(d, "wisp", "downloads")
}

// dnsAddr reads an upstream DNS server: an address, with :port or not.
func (c *Config) dnsAddr(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.String(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	return "", fmt.Errorf("dns upstream %q: want an address, optionally with :port", s)
}

// Net returns the network settings (call after Validate).
func (c *Config) Net() (cidr netip.Prefix, allow, deny []netip.Prefix, dns []string) {
	cidr, _ = netip.ParsePrefix(c.NetCIDR)
	for _, a := range c.NetAllow {
		p, _ := netip.ParsePrefix(a)
		allow = append(allow, p.Masked())
	}
	for _, a := range c.NetDeny {
		p, _ := netip.ParsePrefix(a)
		deny = append(deny, p.Masked())
	}
	for _, d := range c.DNS {
		a, _ := c.dnsAddr(d)
		dns = append(dns, a)
	}
	return cidr.Masked(), allow, deny, dns
}

// AgentPath returns the agent binary: the configured one, else wisp-agent
// beside the running executable.
func (c *Config) AgentPath() (string, error) {
	if c.Agent != "" {
		return c.Agent, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	p := filepath.Join(filepath.Dir(exe), "wisp-agent")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("agent binary not found at %s (build it with `make`, or pass --agent): %w", p, err)
	}
	return p, nil
}

// hostMemMiB is the host's RAM; a sprite may ask for at most half of it.
func hostMemMiB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 4096
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024 / 2
		}
	}
	return 4096
}
