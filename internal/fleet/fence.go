package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wisp-sh/wisp/internal/cluster"
	"github.com/wisp-sh/wisp/internal/sprite"
	"github.com/wisp-sh/wisp/internal/storage"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// The fence watchdog: a VM outlives its daemon (a crashed or killed wispd
// leaves it running, to be adopted by the next), but in a cluster a VM
// whose host has lost its claim must not run on while another host wakes
// the sprite. The daemon's own watchdog (Lost) covers a daemon that lives;
// this covers one that died: a small process of its own (wispd
// --fence-watchdog FILE), started with the daemon and outliving it, reads
// the fence file the daemon rewrites every half second (the time by which
// its sprites must be stopped unless a keep-alive succeeds, and the
// cgroups of its running sprites) and, once that time has passed with no
// newer file, kills every process in those cgroups: before the lease can
// expire and another host claim. A daemon that comes back in time (a quick
// restart) writes a newer file and nothing is killed. A clean shutdown
// removes the file, and the watchdog exits.

// Fence is the fence file's content.
type Fence struct {
	Daemon   int       `json:"daemon"`   // the daemon's pid
	Deadline time.Time `json:"deadline"` // stop the sprites by then
	Cgroups  []string  `json:"cgroups"`  // below each hierarchy's root, e.g. wisp/qemu-ID
	// Sprites is the daemon's folder of sprite folders (named by id): a
	// sprite whose VM started after the last write is found there.
	Sprites string `json:"sprites,omitempty"`
}

// cgroupsOf are the cgroups a running sprite's VMM or sandbox can be in.
func cgroupsOf(rec sprite.Sprite) []string { return idCgroups(rec.ID) }

func idCgroups(id string) []string {
	return []string{vmm.CgroupParent + "/qemu-" + id, vmm.CgroupParent + "/wisp-" + id}
}

// spriteCgroups are the cgroups of every sprite with a folder in dir now
// (the fence file's list lags a sprite that started since its last write).
func spriteCgroups(dir string) []string {
	if dir == "" {
		return nil
	}
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, idCgroups(e.Name())...)
		}
	}
	return out
}

// WriteFences rewrites the fence file at path every half second while the
// Node is live, until ctx ends; then it removes the file (a clean
// shutdown: nothing left to fence).
func (f *Fleet) WriteFences(ctx context.Context, path string) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		if err := f.WriteFence(path); err != nil {
			f.log.Warn("write the fence file", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// WriteFence writes the fence file once, while the Node is live (after a
// lost lease the deadline stands: the sprites are fenced).
func (f *Fleet) WriteFence(path string) error {
	if !f.node.Live() {
		return nil
	}
	fe := Fence{Daemon: os.Getpid(), Deadline: f.node.Deadline(), Sprites: f.m.SpritesDir()}
	for _, rec := range f.m.List() {
		if rec.State != sprite.Stopped && rec.State != sprite.Sleeping {
			fe.Cgroups = append(fe.Cgroups, cgroupsOf(rec)...)
		}
	}
	b, err := json.Marshal(fe)
	if err != nil {
		return err
	}
	return storage.WriteFileAtomic(path, b, 0o600)
}

// RemoveFence removes the fence file after a clean shutdown: the
// watchdog then exits.
func RemoveFence(path string) { os.Remove(path) }

// WatchFence is the fence watchdog (see Fence): it returns when the fence
// file goes (a clean shutdown) or another watchdog holds it.
func WatchFence(path string, log *slog.Logger) error {
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return nil // a watchdog of an earlier start of the daemon watches already
	}
	log.Info("fence watchdog running", "file", path)
	var fired time.Time // the deadline acted on
	for {
		fe, err := readFence(path)
		if errors.Is(err, os.ErrNotExist) {
			log.Info("fence file gone: the daemon shut down cleanly")
			return nil
		}
		now := time.Now()
		switch {
		case err != nil:
			log.Warn("read the fence file", "err", err)
		case now.After(fe.Deadline) && !fe.Deadline.Equal(fired):
			fired = fe.Deadline
			n := killCgroups(append(fe.Cgroups, spriteCgroups(fe.Sprites)...))
			log.Error("the daemon did not renew its cluster lease in time: its sprites were killed before another host may claim them",
				"daemon", fe.Daemon, "deadline", fe.Deadline.Format(time.RFC3339Nano), "processes", n)
		}
		wait := 200 * time.Millisecond
		if d := time.Until(fe.Deadline); err == nil && d > 0 && d < wait {
			wait = d
		}
		time.Sleep(wait) // a poll of a file: nothing to wait on
	}
}

func readFence(path string) (Fence, error) {
	var fe Fence
	file, err := os.Open(path)
	if err != nil {
		return fe, err
	}
	defer file.Close()
	b, err := io.ReadAll(io.LimitReader(file, 1<<20))
	if err != nil {
		return fe, err
	}
	if err := json.Unmarshal(b, &fe); err != nil {
		return fe, fmt.Errorf("fence file %s: %w", path, err)
	}
	return fe, nil
}

// killCgroups SIGKILLs every process of the cgroups (a few rounds, for
// processes forked meanwhile) and returns how many it signalled.
func killCgroups(cgroups []string) int {
	n := 0
	for range 10 {
		found := 0
		for _, rel := range cgroups {
			if strings.Contains(rel, "..") {
				continue
			}
			dir := vmm.HostCgroups.Open(rel).Dir("pids")
			if dir == "" {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					syscall.Kill(pid, syscall.SIGKILL)
					found++
				}
			}
		}
		if found == 0 {
			break
		}
		n += found
		time.Sleep(50 * time.Millisecond) // let the kernel take them out of the cgroup
	}
	return n
}

// RenewFence moves the deadline of a fence file a previous run of the
// daemon left to deadline, keeping its cgroups: a daemon that restarts
// after a crash takes its lease back (cluster.Config.Previous) and must
// tell the watchdog before the old deadline, while it is still recovering
// the VMs it will adopt.
func RenewFence(path string, deadline time.Time) error {
	fe, err := readFence(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	fe.Daemon, fe.Deadline = os.Getpid(), deadline
	b, err := json.Marshal(fe)
	if err != nil {
		return err
	}
	return storage.WriteFileAtomic(path, b, 0o600)
}

// ReclaimAll binds every sprite this host's previous run claimed (the
// claims in DataDir's owned.json) to node's new lease, keeping their
// fences, before the old lease can expire, and then moves the fence
// file's deadline to the new lease's: a daemon restarted after a crash
// keeps the VMs it will adopt. If any claim cannot be taken back, the
// old deadline stands (the watchdog stops those VMs in time).
func ReclaimAll(ctx context.Context, node *cluster.Node, dataDir, fence string) error {
	owned := map[string]claim{}
	b, err := os.ReadFile(filepath.Join(dataDir, "owned.json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err == nil {
		if err := json.Unmarshal(b, &owned); err != nil {
			return err
		}
	}
	for name, c := range owned {
		if err := node.Reclaim(ctx, name, c.Fence); err != nil {
			return fmt.Errorf("take back sprite %q: %w", name, err)
		}
	}
	return RenewFence(fence, node.Deadline())
}
