// Command wispd is the wisp daemon: it owns the sprites on this host and
// serves the wisp API on a unix socket and, behind tokens, over TCP.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wisp-sh/wisp/internal/config"
	"github.com/wisp-sh/wisp/internal/doctor"
	"github.com/wisp-sh/wisp/internal/e2b"
	"github.com/wisp-sh/wisp/internal/fleet"
	"github.com/wisp-sh/wisp/internal/image"
	"github.com/wisp-sh/wisp/internal/meter"
	"github.com/wisp-sh/wisp/internal/network"
	"github.com/wisp-sh/wisp/internal/server"
	"github.com/wisp-sh/wisp/internal/sprite"
	"github.com/wisp-sh/wisp/internal/storage"
	"github.com/wisp-sh/wisp/internal/token"
	"github.com/wisp-sh/wisp/internal/vmm"
	"github.com/wisp-sh/wisp/internal/vmm/gvisor"
	"github.com/wisp-sh/wisp/internal/vmm/qemu"
)

var version = "dev"

func main() {
	cfg := config.Default()
	flag.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "metadata, images and sprite disks")
	flag.StringVar(&cfg.Socket, "socket", cfg.Socket, "the API's unix socket")
	flag.StringVar(&cfg.Backend, "backend", cfg.Backend, "default isolation backend: auto, qemu or gvisor")
	flag.StringVar(&cfg.QEMU, "qemu", cfg.QEMU, "qemu-system-x86_64 binary")
	flag.BoolVar(&cfg.AllowTCG, "allow-tcg", cfg.AllowTCG, "offer QEMU on a host without hardware KVM (TCG emulation: slow, and not a security boundary)")
	flag.StringVar(&cfg.QEMUCPU, "qemu-cpu", cfg.QEMUCPU, "under KVM, a named CPU model (such as Skylake-Server-v4; `qemu-system-x86_64 -cpu help`) used with enforce instead of -cpu host: in a cluster, hosts of one model restore each other's sleeping QEMU sprites")
	flag.StringVar(&cfg.QEMUUser, "qemu-user", cfg.QEMUUser, "unprivileged user QEMU drops to when wispd runs as root and a sprite has no uid of its own")
	flag.StringVar(&cfg.VMMUIDs, "vmm-uids", cfg.VMMUIDs, "FIRST-LAST: host uids given to sprites' VMMs, one of its own each (the first: warm snapshot builds); a range no user of the host and no other wispd uses")
	flag.StringVar(&cfg.Runsc, "runsc", cfg.Runsc, "runsc binary (default: $WISP_RUNSC or /usr/local/libexec/wisp/runsc)")
	flag.StringVar(&cfg.Agent, "agent", cfg.Agent, "wisp-agent binary (default: beside wispd)")
	flag.StringVar(&cfg.Images, "images", cfg.Images, "image directory (default: in the storage pool; elsewhere, each image is copied into the pool once)")
	flag.StringVar(&cfg.BuildDir, "build-dir", cfg.BuildDir, "where image builds make their root trees: a filesystem with device nodes and exec (default: DATA/build)")
	flag.StringVar(&cfg.Cache, "cache", cfg.Cache, "where image builds cache their pinned downloads (default: ~/.cache/wisp/downloads)")
	flag.IntVar(&cfg.PoolGiB, "pool-size", cfg.PoolGiB, "storage pool size in GiB, where wisp makes a pool file (sparse; raise it to grow the pool)")
	flag.IntVar(&cfg.CPUs, "default-cpus", cfg.CPUs, "cpus of a sprite when create does not say")
	flag.IntVar(&cfg.MemoryMiB, "default-memory", cfg.MemoryMiB, "memory (MiB) of a sprite when create does not say")
	flag.IntVar(&cfg.DiskGiB, "default-disk", cfg.DiskGiB, "disk (GiB) of a sprite when create does not say")
	flag.IntVar(&cfg.Pids, "default-pids", cfg.Pids, "process limit inside a sprite when create does not say (a gVisor sprite's host tasks are about twice it)")
	flag.IntVar(&cfg.MaxPids, "max-pids", cfg.MaxPids, "largest process limit a create may ask for")
	flag.StringVar(&cfg.Image, "default-image", cfg.Image, "image of a sprite when create does not say")
	flag.DurationVar(&cfg.Idle, "idle", cfg.Idle, "sleep sprites unused this long (0: never), unless a sprite says otherwise")
	flag.BoolVar(&cfg.WarmSnapshots, "warm-snapshots", cfg.WarmSnapshots, "create sprites from a saved, freshly booted one instead of booting a kernel")
	flag.BoolVar(&cfg.Network, "network", cfg.Network, "give sprites networks of their own (needs root); false: no network at all")
	flag.StringVar(&cfg.NetName, "net-name", cfg.NetName, "names this daemon's nftables table and network namespaces (two daemons on one host need two names and CIDRs)")
	flag.StringVar(&cfg.NetCIDR, "net-cidr", cfg.NetCIDR, "IPv4 range of sprite addresses, a /30 each; must not overlap the host's networks")
	flag.Func("net-allow", "CIDR sprites may reach despite the default deny list (a LAN database); repeatable or comma-separated", appendList(&cfg.NetAllow))
	flag.Func("net-deny", "CIDR no sprite may reach, besides the default deny list; repeatable or comma-separated", appendList(&cfg.NetDeny))
	flag.Func("dns-upstream", "DNS server sprites' queries go to (default: /etc/resolv.conf's); repeatable", appendList(&cfg.DNS))
	flag.StringVar(&cfg.Hosts, "hosts-file", cfg.Hosts, "hosts file whose names sprites' DNS answers first")
	flag.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "where the front door serves sprites' URLs (http://NAME.localhost:PORT/); empty: off")
	flag.StringVar(&cfg.Listen, "listen", cfg.Listen, "also serve the API over TCP here, every request behind a bearer token (`wisp token create`); empty: off")
	flag.DurationVar(&cfg.URLWait, "url-wait", cfg.URLWait, "how long a URL request that wakes or starts a sprite waits for its port to listen")
	flag.DurationVar(&cfg.MeterInterval, "meter-interval", cfg.MeterInterval, "how often each sprite's CPU, memory, storage and network use is sampled")
	flag.StringVar(&cfg.Prices, "prices", cfg.Prices, "JSON file of the prices `wisp usage` shows costs in (see the README); empty: the defaults")
	flag.Func("cluster", "cluster mode: etcd=URL[,URL] of the etcd that holds membership and ownership (off by default)", func(v string) error {
		urls, ok := strings.CutPrefix(v, "etcd=")
		if !ok {
			return errors.New("want etcd=URL[,URL]")
		}
		return appendList(&cfg.Etcd)(urls)
	})
	flag.StringVar(&cfg.S3, "s3", cfg.S3, "cluster mode: URL of the S3-compatible store of sprite state (credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --s3-credentials)")
	flag.StringVar(&cfg.S3Bucket, "s3-bucket", cfg.S3Bucket, "cluster mode: the bucket of sprite state")
	flag.StringVar(&cfg.S3Credentials, "s3-credentials", cfg.S3Credentials, "cluster mode: file with the S3 access key and secret (two lines, or AWS_ACCESS_KEY_ID= / AWS_SECRET_ACCESS_KEY= lines)")
	flag.StringVar(&cfg.HostID, "host-id", cfg.HostID, "cluster mode: this host's id (default: the hostname)")
	flag.StringVar(&cfg.Advertise, "advertise", cfg.Advertise, "cluster mode: the URL other hosts reach this host's API at (default: http:// + --listen)")
	flag.StringVar(&cfg.CPUClass, "cpu-class", cfg.CPUClass, "cluster mode: the CPU class this host advertises (default: its CPU model and a digest of its feature flags); a sleeping sprite's memory wakes only on a host of the same class, so a mixed cluster can pin a class common to its hosts (sprites must then use only that class's features)")
	flag.DurationVar(&cfg.ClusterTTL, "cluster-ttl", 0, "cluster mode: this host's lease in etcd (default 10s); a host cut off from etcd stops its sprites before it ends (tests shorten it)")
	debug := flag.Bool("debug", false, "log at debug level")
	fenceWatchdog := flag.String("fence-watchdog", "", "internal: run as the fence watchdog of a daemon in cluster mode, reading this fence file")
	doctorOnly := flag.Bool("doctor", false, "print this host's report as JSON (what `wisp doctor` shows) without starting the daemon, and exit")
	flag.Parse()
	if *fenceWatchdog != "" {
		if err := fleet.WatchFence(*fenceWatchdog, slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
			fmt.Fprintln(os.Stderr, "fence watchdog:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if *doctorOnly {
		os.Exit(printDoctor())
	}

	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(log, cfg); err != nil {
		log.Error("wispd failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, cfg config.Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	agentPath, err := cfg.AgentPath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	pool, err := storage.OpenPool(context.Background(), log, cfg.DataDir, cfg.PoolGiB)
	if err != nil {
		return fmt.Errorf("storage pool: %w", err)
	}
	if pool.Warning != "" {
		log.Warn("storage pool without reflinks", "warning", pool.Warning)
	}
	imagesDir := cfg.Images
	if imagesDir == "" {
		imagesDir = filepath.Join(pool.Root, "images")
	}
	images := &image.Store{Dir: imagesDir, Scratch: cfg.BuildPath(), Cache: cfg.CachePath(), Log: log}
	images.CleanScratch() // work dirs of builds a crash cut short
	drivers, choice, gv, unavailable := backends(log, cfg, pool.Clone, filepath.Join(pool.Root, "agents"))
	var nw *network.Network
	netInfo := &doctor.NetworkInfo{}
	if cfg.Network {
		cidr, allow, deny, dns := cfg.Net()
		nw, err = network.Open(network.Config{Name: cfg.NetName, CIDR: cidr, Open: allow, Deny: deny, Upstreams: dns, HostsFile: cfg.Hosts, Log: log})
		if err != nil {
			return fmt.Errorf("sprite networking: %w (run wispd as root, or --network=false for sprites without network)", err)
		}
		defer nw.Close()
		*netInfo = doctor.ProbeNetwork(cfg.NetName, cidr.String(), allow, deny)
	} else {
		netInfo.Problem = "off (wispd --network=false): sprites have no network"
	}
	if _, ok := drivers[choice.Auto]; !ok {
		why := cmp.Or(unavailable[choice.Auto], "see `wisp doctor`")
		return fmt.Errorf("backend %s is not available on this host: %s", choice.Auto, why)
	}
	opt := sprite.Options{
		DataDir: pool.Root,
		// The records live outside the pool: a full pool must not stop
		// the daemon from recording what it does.
		StorePath:   filepath.Join(cfg.DataDir, "wisp.db"),
		Clone:       pool.Clone,
		AgentPath:   agentPath,
		Backend:     choice.Auto,
		Drivers:     drivers,
		Unavailable: unavailable,
		Images:      &image.Boot{Store: images, AgentPath: agentPath, Pool: filepath.Join(pool.Root, "imported"), Clone: pool.Clone},
		Defaults:    sprite.CreateOptions{CPUs: cfg.CPUs, MemoryMiB: cfg.MemoryMiB, DiskGiB: cfg.DiskGiB, Image: cfg.Image, Pids: cfg.Pids},
		Limits:      sprite.Limits{MaxCPUs: cfg.MaxCPUs, MaxMemoryMiB: cfg.MaxMemoryMiB, MaxDiskGiB: cfg.MaxDiskGiB, MaxPids: cfg.MaxPids},
		Idle:        cfg.Idle,
		// runsc restore (~150-300 ms) is slower than runsc run (~130 ms):
		// warm snapshots pay off for QEMU only, where they replace a boot.
		WarmSnapshots: map[string]bool{"qemu": cfg.WarmSnapshots},
	}
	opt.UIDs.First, opt.UIDs.Count, _ = cfg.UIDRange() // checked by Validate
	if nw != nil {
		opt.Net = nw
	}
	// The API over TCP listens before the cluster is joined (the other
	// hosts are told its address) and serves once the sprites are ready.
	remote, err := listenRemote(log, cfg)
	if err != nil {
		return err
	}
	var cl *clusterParts
	var facts hostFacts
	if len(cfg.Etcd) > 0 {
		if remote != nil && cfg.Advertise == "" {
			cfg.Advertise = "http://" + remote.Addr().String()
		}
		q := qemu.Detect(cfg.QEMU)
		facts = hostFacts{CPUClass: cmp.Or(cfg.CPUClass, cpuClass()), QEMU: q.Version, Accel: q.Accel, Runsc: gv.Version}
		switch {
		case q.Accel != "kvm":
			facts.QEMUCPU = "tcg max"
		case cfg.QEMUCPU != "":
			facts.QEMUCPU = cfg.QEMUCPU + " (enforce)"
		}
		if cl, err = joinCluster(context.Background(), log, cfg, pool.Root, facts); err != nil {
			return err
		}
		defer cl.Close()
		if nw != nil {
			opt.Net = &fleet.Addresses{Network: nw, Node: cl.node}
		}
	}
	// The meter's database lives in the data dir, outside the pool: a
	// full pool must not stop it from recording.
	prices, err := meter.LoadPrices(cfg.Prices)
	if err != nil {
		return err
	}
	mtr, err := meter.Open(meter.Options{Path: filepath.Join(cfg.DataDir, "usage.db"), Interval: cfg.MeterInterval, Prices: prices, Log: log})
	if err != nil {
		return fmt.Errorf("usage meter: %w", err)
	}
	defer mtr.Close()
	opt.Allow = func(rec sprite.Sprite) error { return mtr.Allow(rec.ID) }
	var mgr *sprite.Manager
	metrics := meter.NewMetrics(mtr, func() map[string]int {
		n := map[string]int{}
		for _, s := range mgr.List() {
			n[string(s.State)]++
		}
		return n
	})
	opt.Observe = metrics.Observe
	mgr, err = sprite.NewManager(log, opt)
	if err != nil {
		return err
	}
	defer mgr.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := listen(cfg.Socket)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := mgr.Recover(ctx); err != nil {
		return fmt.Errorf("recover sprites: %w", err)
	}
	log.Info("sprites recovered", "count", len(mgr.List()), "took", time.Since(t0).Round(time.Millisecond))

	var fl *fleet.Fleet
	if cl != nil {
		if fl, err = cl.start(ctx, log, pool.Root, mgr, facts); err != nil {
			return err
		}
	}

	go mgr.IdleLoop(ctx, time.Second)
	meterDone := make(chan struct{})
	go func() { defer close(meterDone); mtr.Run(ctx, mgr, mgr) }()
	defer func() { stop(); <-meterDone }() // before the meter's database closes

	front, err := serveFrontDoor(ctx, log, cfg, mgr)
	if err != nil {
		return err
	}

	tokens, err := token.Open(filepath.Join(cfg.DataDir, "tokens.db"))
	if err != nil {
		return fmt.Errorf("token store: %w", err)
	}
	defer tokens.Close()

	srv := &server.Server{
		Log: log, Sprites: mgr, Images: images, Meter: mtr, Metrics: metrics, Version: version, FrontDoor: front.addr, URLKey: front.key, PortWait: cfg.URLWait,
		Tokens: tokens,
		Doctor: func(context.Context) any {
			return doctor.Probe(doctor.Options{Version: version, DataDir: cfg.DataDir, Images: images, Choice: &choice, GVisor: gv, Pool: pool, Warm: mgr.WarmSnapshots, Network: netInfo,
				Jail: func() *doctor.JailInfo {
					j := &doctor.JailInfo{VMMUIDs: cfg.VMMUIDs, Enforced: os.Getuid() == 0, Cgroups: map[string]int{}, Sprites: mgr.Confinements()}
					for _, c := range []string{"pids", "memory", "cpu", "io"} {
						j.Cgroups[c] = vmm.HostCgroups.Version(c)
					}
					return j
				}})
		},
	}
	if fl != nil {
		srv.Fleet = fl
	}
	if cfg.Listen != "" {
		e2bAPI, err := newE2B(log, cfg, mgr, images, mtr, tokens, front.addr)
		if err != nil {
			return err
		}
		defer e2bAPI.Close()
		srv.E2B, srv.E2BMatch = e2bAPI, e2b.IsE2B
	}
	if _, err := serveRemote(ctx, log, remote, srv); err != nil {
		return err
	}
	hs := srv.HTTPServer()
	go func() {
		<-ctx.Done()
		if fl != nil {
			log.Info("shutting down; leaving the cluster: running sprites are put to sleep and published")
		} else {
			log.Info("shutting down; sprites keep running")
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}()
	log.Info("wispd listening", "socket", cfg.Socket, "data_dir", cfg.DataDir, "backend", choice.Auto, "pool", pool.Kind)
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	if fl != nil {
		// Leaving the cluster ends this host's claims: its sprites are put
		// to rest and published first, so that none runs unowned.
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		fl.Shutdown(sctx)
		cl.leave()
	}
	return nil
}

// backends builds the drivers this host can run and decides what auto
// means: QEMU with hardware KVM where the host has it; else gVisor, which
// needs no hardware virtualization and is a real boundary; else QEMU under
// TCG emulation (slow, and not a security boundary).
//
// QEMU under TCG is offered only with --allow-tcg; unavailable says why a
// backend is missing, for the error a create that asks for it gets.
func backends(log *slog.Logger, cfg config.Config, clone func(src, dst string) error, agentCache string) (map[string]vmm.Driver, doctor.BackendChoice, *doctor.GVisorInfo, map[string]string) {
	drivers := map[string]vmm.Driver{}
	unavailable := map[string]string{}
	if os.Getuid() == 0 {
		// Each sprite has its own task limit; together they may hold at
		// most half the host's pids, so the host can always start more.
		if err := vmm.LimitAllTasks(vmm.HostPidMax() / 2); err != nil {
			log.Warn("no cap on the tasks of all sprites together", "err", err)
		}
	}
	host := qemu.Detect(cfg.QEMU)
	switch {
	case len(host.Problems) > 0:
		unavailable["qemu"] = strings.Join(host.Problems, "; ")
	case !host.KVM && !cfg.AllowTCG:
		unavailable["qemu"] = "no hardware KVM (" + host.KVMWhy + "): QEMU would emulate (TCG), which is slow and not a security boundary; start wispd with --allow-tcg to offer it anyway"
	default:
		q := qemu.New(log, host, cfg.QEMUUser)
		q.CPUModel = cfg.QEMUCPU
		q.Clone = clone // memory files of checkpoints are reflinks in the pool
		drivers["qemu"] = q
	}
	gv := &doctor.GVisorInfo{}
	runsc, err := cfg.Runsc, error(nil)
	if runsc == "" {
		runsc, err = gvisor.FindRunsc()
	}
	if err != nil {
		gv.Problem = err.Error()
	} else if os.Getuid() != 0 {
		gv.Problem = "wispd must run as root for gVisor sandboxes (loop mounts, cgroups)"
	} else {
		gv.Runsc, gv.Version = runsc, gvisor.Version(runsc)
		g := gvisor.New(log, runsc, filepath.Join(cfg.DataDir, "runsc"))
		g.AgentCache = agentCache // beside the sprites: a boot links the agent
		drivers["gvisor"] = g
	}
	choice := doctor.BackendChoice{Configured: cfg.Backend}
	_, haveQEMU := drivers["qemu"]
	_, haveGVisor := drivers["gvisor"]
	switch {
	case host.KVM && haveQEMU:
		choice.Auto, choice.Reason = "qemu", "hardware KVM is available: QEMU microVMs on KVM"
	case haveGVisor:
		choice.Auto, choice.Reason = "gvisor", "no hardware KVM ("+host.KVMWhy+"): gVisor (systrap) isolates without it"
	case haveQEMU:
		choice.Auto, choice.Reason = "qemu", "no hardware KVM and no gVisor: QEMU under TCG emulation (slow, not a security boundary; --allow-tcg)"
	default:
		choice.Auto, choice.Reason = "qemu", "no backend: no hardware KVM, no gVisor, and QEMU under TCG needs --allow-tcg"
	}
	if cfg.Backend != "auto" {
		choice.Auto = cfg.Backend
		choice.Reason = "set by --backend"
	}
	if gv.Problem != "" {
		unavailable["gvisor"] = gv.Problem
	}
	return drivers, choice, gv, unavailable
}

// appendList is a flag.Func that appends comma-separated values.
func appendList(dst *[]string) func(string) error {
	return func(v string) error {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				*dst = append(*dst, f)
			}
		}
		return nil
	}
}

// listen opens the API socket (mode 0660), replacing a stale socket file
// but refusing to steal one a live daemon answers on.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another wispd is already listening on %s", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// printDoctor prints what this host offers, as `wisp doctor` shows it,
// for a host where no daemon runs (the CLI, which links nothing of the
// daemon, runs `wispd --doctor` then).
func printDoctor() int {
	rep := doctor.Probe(doctor.Options{Version: version})
	rep.Daemon = "not running"
	out, err := server.DoctorReport(rep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wispd:", err)
		return 1
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return 1
	}
	return 0
}
