package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wisp-sh/wisp/internal/blob"
	"github.com/wisp-sh/wisp/internal/cluster"
	"github.com/wisp-sh/wisp/internal/config"
	"github.com/wisp-sh/wisp/internal/fleet"
	"github.com/wisp-sh/wisp/internal/sprite"
	"github.com/wisp-sh/wisp/internal/storage"
)

// hostFacts are what a sleeping sprite's memory needs of the host that
// wakes it: the same CPU class, and the same QEMU and accelerator (QEMU)
// or the same runsc (gVisor).
type hostFacts struct {
	CPUClass, QEMU, Accel, Runsc string
	// QEMUCPU is the CPU QEMU's guests see: TCG's max (the same on every
	// host of a QEMU version), a named model (--qemu-cpu), or the host's
	// own (CPUClass).
	QEMUCPU string
}

func (h hostFacts) compat() map[string]map[string]string {
	return map[string]map[string]string{
		"qemu":   {"cpu": cmp.Or(h.QEMUCPU, h.CPUClass), "qemu": h.QEMU, "accel": h.Accel},
		"gvisor": {"cpu": h.CPUClass, "runsc": h.Runsc},
	}
}

// cpuClass names the host's CPU: its model and a digest of its feature
// flags (a restored guest may use any feature it saw at boot).
func cpuClass() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	var model, flags string
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name":
			model = cmp.Or(model, strings.TrimSpace(v))
		case "flags":
			flags = cmp.Or(flags, strings.TrimSpace(v))
		}
	}
	h := sha256.Sum256([]byte(flags))
	return model + " /" + hex.EncodeToString(h[:4])
}

// clusterParts are the daemon's links to the cluster, made before the
// Manager (whose sprite addresses come from etcd) and started after its
// Recover.
type clusterParts struct {
	node  *cluster.Node
	store *blob.Store
	live  atomic.Pointer[fleet.Fleet] // for the lease-lost callback
	// fence is the fence file the watchdog reads; stopFences ends its
	// rewriting.
	fence      string
	stopFences context.CancelFunc
}

// joinCluster joins etcd and opens the object store (cluster mode).
func joinCluster(ctx context.Context, log *slog.Logger, cfg config.Config, dataDir string, facts hostFacts) (*clusterParts, error) {
	access, secret, err := blob.S3CredentialsFromEnv(cfg.S3Credentials)
	if err != nil {
		return nil, err
	}
	bucket, err := blob.NewS3(blob.S3Config{Endpoint: cfg.S3, Bucket: cfg.S3Bucket, AccessKey: access, SecretKey: secret})
	if err != nil {
		return nil, fmt.Errorf("object store: %w", err)
	}
	p := &clusterParts{store: blob.New(bucket, filepath.Join(dataDir, "cluster", "index"), log)}
	id := cfg.HostID
	if id == "" {
		if id, err = os.Hostname(); err != nil {
			return nil, err
		}
	}
	// The lease of this host's previous run: a restart takes its entry
	// over at once and keeps its claims (Reclaim), instead of waiting for
	// the old lease to expire and losing them.
	leaseFile := filepath.Join(dataDir, "cluster", "lease")
	var previous int64
	if b, err := os.ReadFile(leaseFile); err == nil {
		previous, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	p.node, err = cluster.Join(ctx, cluster.Config{
		Endpoints: cfg.Etcd,
		Previous:  previous,
		TTL:       cfg.ClusterTTL,
		Host: cluster.Host{ID: id, API: cfg.Advertise, CPUClass: facts.CPUClass, QEMU: facts.QEMU,
			Runsc: facts.Runsc, Accel: facts.Accel, Version: version, CPUs: runtime.NumCPU(), Started: time.Now().UTC()},
		Log: log,
		OnLost: func() {
			if f := p.live.Load(); f != nil {
				f.Lost()
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("join the cluster: %w", err)
	}
	if err := fleet.ReclaimAll(ctx, p.node, filepath.Join(dataDir, "cluster"), fencePath(dataDir)); err != nil {
		log.Warn("sprites of this host's previous run not taken back at once: their VMs stop at the old lease's deadline", "err", err)
	}
	if err := os.MkdirAll(filepath.Dir(leaseFile), 0o700); err == nil {
		err = storage.WriteFileAtomic(leaseFile, []byte(strconv.FormatInt(p.node.Lease(), 10)), 0o600)
	}
	if err != nil {
		log.Warn("record the cluster lease", "err", err)
	}
	log.Info("joined the cluster", "host", id, "api", cfg.Advertise, "etcd", strings.Join(cfg.Etcd, ","), "s3", cfg.S3, "bucket", cfg.S3Bucket)
	return p, nil
}

// start reconciles this host's sprites with the cluster (after the
// Manager's Recover, before serving) and returns the Fleet.
func (p *clusterParts) start(ctx context.Context, log *slog.Logger, dataDir string, mgr *sprite.Manager, facts hostFacts) (*fleet.Fleet, error) {
	f, err := fleet.New(fleet.Config{DataDir: filepath.Join(dataDir, "cluster"), Compat: facts.compat(), Log: log}, mgr, p.node, p.store)
	if err != nil {
		return nil, err
	}
	p.live.Store(f)
	mgr.SetPlacement(f)
	if err := f.Start(ctx); err != nil {
		return nil, err
	}
	go f.SweepLoop(ctx, 10*time.Minute, time.Hour)
	p.fence = fencePath(dataDir)
	var fctx context.Context
	fctx, p.stopFences = context.WithCancel(context.Background())
	// The watchdog takes a missing file for a clean shutdown: write it first.
	if err := f.WriteFence(p.fence); err != nil {
		return nil, fmt.Errorf("write the fence file: %w", err)
	}
	go f.WriteFences(fctx, p.fence)
	if err := startFenceWatchdog(p.fence, filepath.Join(dataDir, "cluster", "watchdog.log")); err != nil {
		log.Warn("no fence watchdog: if this daemon dies, its sprites' VMs run on when another host may claim them", "err", err)
	}
	return f, nil
}

// startFenceWatchdog starts `wispd --fence-watchdog FILE` in a session of
// its own, so that it outlives this daemon (see fleet.WatchFence).
func startFenceWatchdog(fence, logFile string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd := exec.Command(self, "--fence-watchdog", fence)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}

// leave ends the fence file after a clean shutdown (the sprites were put
// to rest and published, or fenced): the watchdog exits.
func (p *clusterParts) leave() {
	if p.stopFences != nil {
		p.stopFences()
		fleet.RemoveFence(p.fence)
	}
}

// Close leaves the cluster: the lease is revoked, this host's claims go.
func (p *clusterParts) Close() error { return p.node.Close() }

func fencePath(dataDir string) string { return filepath.Join(dataDir, "cluster", "fence.json") }
