package qemu

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/storage"
	"github.com/wisp-sh/wisp/internal/vmm"
)

var (
	_ vmm.Freezer = (*Driver)(nil)
	_ vmm.Saver   = (*Driver)(nil)
)

// Files of a saved state (in the folder given to Save).
const (
	stateFile  = "state.json" // written last: its presence marks a whole state
	deviceFile = "device"     // QEMU's migration stream (RAM excluded)
)

// saveTimeout bounds a Save or Restore beyond the caller's ctx: with RAM
// in a shared file, both take milliseconds.
const saveTimeout = 30 * time.Second

// Freeze freezes the guest's root filesystem through the agent (FIFREEZE).
// The guest thaws by itself after proto.FreezeLimit if thaw never comes.
func (d *Driver) Freeze(ctx context.Context, inst vmm.Instance) (func() error, error) {
	ag := inst.Agent()
	if ag == nil {
		return nil, errors.New("freeze: no agent connection")
	}
	if err := ag.Freeze(ctx); err != nil {
		return nil, fmt.Errorf("freeze: %w", err)
	}
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ag.Thaw(ctx); err != nil {
			return fmt.Errorf("thaw: %w", err)
		}
		return nil
	}, nil
}

// savedState is dir/state.json: what Restore needs to know it can load the
// state, and where the memory is.
type savedState struct {
	QEMU      string    `json:"qemu"` // version that saved it
	Accel     string    `json:"accel"`
	Machine   string    `json:"machine"` // -M
	Devices   []string  `json:"devices"` // -device drivers, in order
	CPUs      int       `json:"cpus"`
	MemoryMiB int       `json:"memory_mib"`
	Device    string    `json:"device"`           // migration stream, in dir
	Memory    string    `json:"memory,omitempty"` // RAM copy in dir; empty: the sprite's own memory file
	Saved     time.Time `json:"saved"`
	// Session names the host's agent session the driver kept for this
	// state (a sleep's); empty: none.
	Session string `json:"session,omitempty"`
}

// machineOf returns the parts of argv that a migration stream depends on:
// the machine and the device drivers.
func machineOf(argv []string) (machine string, devices []string) {
	for i := 0; i+1 < len(argv); i++ {
		switch argv[i] {
		case "-M":
			machine = argv[i+1]
		case "-device":
			drv, _, _ := strings.Cut(argv[i+1], ",")
			devices = append(devices, drv)
		}
	}
	return machine, devices
}

// newState describes a save of spec by d from QEMU version v.
func (d *Driver) newState(spec vmm.Spec, v qemuVersion, memory string) savedState {
	m, devs := machineOf(d.Argv(spec))
	return savedState{QEMU: v.String(), Accel: d.Accel, Machine: m, Devices: devs,
		CPUs: spec.CPUs, MemoryMiB: spec.MemoryMiB, Device: deviceFile, Memory: memory, Saved: time.Now().UTC()}
}

// compatible reports why d cannot restore st into spec (nil if it can).
// The QEMU version is checked later, once the new QEMU greets (sameSeries).
func (d *Driver) compatible(st savedState, spec vmm.Spec) error {
	want := d.newState(spec, qemuVersion{}, st.Memory)
	switch {
	case st.Device == "" || strings.ContainsAny(st.Device, "/\\") || strings.Contains(st.Memory, "/"):
		return fmt.Errorf("bad file names (device %q, memory %q)", st.Device, st.Memory)
	case st.Accel != want.Accel:
		return fmt.Errorf("saved under %s, this host runs %s", st.Accel, want.Accel)
	case st.CPUs != want.CPUs || st.MemoryMiB != want.MemoryMiB:
		return fmt.Errorf("saved with %d CPUs and %d MiB, the sprite has %d CPUs and %d MiB", st.CPUs, st.MemoryMiB, want.CPUs, want.MemoryMiB)
	case st.Machine != want.Machine || strings.Join(st.Devices, " ") != strings.Join(want.Devices, " "):
		return fmt.Errorf("saved machine %q with devices %v, this driver builds %q with %v", st.Machine, st.Devices, want.Machine, want.Devices)
	}
	return nil
}

// sameSeries reports whether QEMU version running can load a stream saved by
// version saved: the same major.minor (stable point releases keep the
// migration format; across series it is not promised for microvm, which
// has no versioned machine types).
func sameSeries(saved string, running qemuVersion) error {
	var v qemuVersion
	if _, err := fmt.Sscanf(saved, "%d.%d.%d", &v.Major, &v.Minor, &v.Micro); err != nil {
		return fmt.Errorf("bad QEMU version %q in state", saved)
	}
	if v.Major != running.Major || v.Minor != running.Minor {
		return fmt.Errorf("saved by QEMU %s, cannot load in QEMU %s", saved, running)
	}
	return nil
}

// readState reads and decodes dir/state.json.
func readState(dir string) (savedState, error) {
	var st savedState
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return st, fmt.Errorf("no saved state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %w", stateFile, err)
	}
	return st, nil
}

// clone copies src to dst (reflink where the filesystem can), through a
// temporary name so dst is whole or absent; durable: on stable storage
// when it returns (a checkpoint's copy, not a running sprite's memory).
func (d *Driver) clone(src, dst string, durable bool) error {
	tmp := dst + ".tmp"
	os.Remove(tmp)
	clone := d.Clone
	if clone == nil {
		clone = storage.CopyFile
	}
	err := clone(src, tmp)
	if err == nil && durable {
		err = syncFile(tmp)
	}
	if err == nil && durable {
		err = storage.RenameDurable(tmp, dst)
	} else if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return nil
}

// syncFile writes a file's data and metadata (a clone's extents) to
// stable storage.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Save pauses inst and writes its device state (and, when dir is not
// inside the sprite's folder, a copy of its memory) into dir. RAM is a
// shared file and is not in the migration stream (x-ignore-shared).
// The stream reaches the file through a descriptor passed over QMP
// (getfd, migrate fd:), as QEMU may neither spawn nor open files.
func (d *Driver) Save(ctx context.Context, vi vmm.Instance, dir string, keep bool, during func() error) (err error) {
	inst, ok := vi.(*Instance)
	if !ok {
		return fmt.Errorf("save: %T is not a QEMU instance", vi)
	}
	spec := inst.spec
	defer func() {
		if err != nil {
			err = fmt.Errorf("save %s to %s: %w", spec.Name, dir, err)
		}
	}()
	select {
	case <-inst.done:
		return vmm.ErrNotRunning
	default:
	}
	ctx, cancel := context.WithTimeout(ctx, saveTimeout)
	defer cancel()
	// The state is made in a folder of its own and renamed to dir once
	// whole: a dir that exists holds a whole state (a daemon killed
	// during a sleep finds either none or all of it). An earlier state in
	// dir goes first, so a Save killed half-way leaves none, not a mix.
	dir = filepath.Clean(dir)
	work := dir + ".tmp"
	if err := errors.Join(os.RemoveAll(dir), os.RemoveAll(work)); err != nil {
		return err
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(work)
		}
	}()
	mon, err := dialMonitor(ctx, filepath.Join(spec.Dir, qmpSock), inst.done)
	if err != nil {
		return err
	}
	defer mon.Close()
	if err := setupMigration(ctx, mon); err != nil {
		return err
	}
	// A sleep keeps the agent session for the wake: the host's writes
	// stop, and QEMU takes what it was sent, before the guest stops.
	var kept *agent.Client
	var token string
	if !keep && dir == vmm.SleepDir(spec) {
		kept, token = inst.parkAgent(ctx)
	}
	committed := false
	defer func() {
		if kept != nil && !committed {
			kept.Unpark()
		}
	}()
	if _, err := mon.run(ctx, "stop", nil, nil); err != nil {
		return err
	}
	paused := time.Now()
	defer func() {
		// A failed save leaves the instance running. This monitor may
		// have died with the failure: resume on a fresh connection.
		if err != nil && !committed {
			mon.Close()
			if rerr := inst.qmp("cont"); rerr != nil {
				err = errors.Join(err, fmt.Errorf("resume: %w", rerr))
			}
		}
	}()

	st := d.newState(spec, mon.version, "")
	st.Session = token
	if err := d.migrateOut(ctx, mon, filepath.Join(work, st.Device)); err != nil {
		return fmt.Errorf("%w%s", err, d.diagnose(spec))
	}
	if dir != vmm.SleepDir(spec) {
		st.Memory = memFile
		if err := d.clone(filepath.Join(spec.Dir, memFile), filepath.Join(work, st.Memory), true); err != nil {
			return err
		}
	}
	if during != nil {
		if err := during(); err != nil {
			return fmt.Errorf("during: %w", err)
		}
	}
	if err := writeState(work, st); err != nil {
		return err
	}
	if err := storage.RenameDurable(work, dir); err != nil {
		return err
	}
	committed = true
	if keep {
		if _, err := mon.run(ctx, "cont", nil, nil); err != nil {
			return fmt.Errorf("resume: %w", err)
		}
		d.Log.Debug("saved", "sprite", spec.Name, "paused", time.Since(paused))
		return nil
	}
	if kept != nil {
		inst.setAgent(nil) // it outlives the instance: Restore takes it
		d.keep(spec, token, kept)
	}
	inst.Close()
	if _, err := mon.run(ctx, "quit", nil, nil); err != nil {
		d.Log.Warn("qmp quit after save", "sprite", spec.Name, "err", err)
	}
	select {
	case <-inst.done:
	case <-time.After(10 * time.Second):
		inst.Kill()
		<-inst.done
	}
	return nil
}

// setupMigration sets what both ends of a migration need: RAM in shared
// files is not copied, and no bandwidth limit (QEMU 7.2 throttles to
// 32 MiB/s by default).
func setupMigration(ctx context.Context, mon *monitor) error {
	if _, err := mon.run(ctx, "migrate-set-capabilities", map[string]any{
		"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}},
	}, nil); err != nil {
		return err
	}
	_, err := mon.run(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}, nil)
	return err
}

// migrateOut has the paused QEMU write its migration stream to path
// (through a temporary name, synced before the rename).
func (d *Driver) migrateOut(ctx context.Context, mon *monitor, path string) error {
	f, err := os.OpenFile(path+".tmp", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name()) // fails harmlessly after the rename
	}()
	if _, err := mon.run(ctx, "getfd", map[string]string{"fdname": "wisp-save"}, f); err != nil {
		return err
	}
	if _, err := mon.run(ctx, "migrate", map[string]string{"uri": "fd:wisp-save"}, nil); err != nil {
		return err
	}
	if err := mon.waitMigration(ctx); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return storage.RenameDurable(f.Name(), path)
}

// writeState writes dir/state.json atomically and durably.
func writeState(dir string, st savedState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return storage.WriteFileAtomic(filepath.Join(dir, stateFile), append(b, '\n'), 0o600)
}

// Restore starts spec's QEMU waiting for a migration stream, feeds it
// dir's state, resumes it, reconnects the agent and sets the guest clock
// (it stood still while the sprite slept) and reseeds its randomness.
// The agent session the sleep kept goes on over the new QEMU's socket,
// attached before the guest runs (so the guest never sees its host
// leave); without one, or if it does not answer, the agent gets a new
// session as at boot.
func (d *Driver) Restore(ctx context.Context, spec vmm.Spec, dir string) (_ vmm.Instance, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("restore %s from %s: %w", spec.Name, dir, err)
		}
	}()
	st, err := readState(dir)
	if err != nil {
		return nil, err
	}
	kept := d.takeKept(spec, dir, st.Session)
	defer func() {
		if err != nil && kept != nil {
			kept.Close()
		}
	}()
	if err := d.compatible(st, spec); err != nil {
		return nil, err
	}
	mem := filepath.Join(spec.Dir, memFile)
	if st.Memory != "" {
		if err := d.clone(filepath.Join(dir, st.Memory), mem, false); err != nil {
			return nil, err
		}
	}
	if fi, err := os.Stat(mem); err != nil {
		return nil, err
	} else if fi.Size() != int64(spec.MemoryMiB)<<20 {
		return nil, fmt.Errorf("memory file %s has %d bytes, want %d MiB", mem, fi.Size(), spec.MemoryMiB)
	}
	f, err := os.Open(filepath.Join(dir, st.Device))
	if err != nil {
		return nil, err
	}
	defer f.Close()

	ctx, cancel := context.WithTimeout(ctx, saveTimeout)
	defer cancel()
	t0 := time.Now()
	inst, err := d.spawn(spec, "-incoming", "defer")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			inst.Kill()
			<-inst.done
			inst.Close()
			err = fmt.Errorf("%w%s", err, d.diagnose(spec))
		}
	}()
	mon, err := dialMonitor(ctx, filepath.Join(spec.Dir, qmpSock), inst.done)
	if err != nil {
		return nil, err
	}
	defer mon.Close()
	if err := sameSeries(st.QEMU, mon.version); err != nil {
		return nil, err
	}
	if err := setupMigration(ctx, mon); err != nil {
		return nil, err
	}
	if kept != nil {
		// Connected before the state loads, the guest's port finds its
		// host as it left it.
		conn, err := inst.dialAgent(ctx)
		if err != nil {
			return nil, err
		}
		kept.Attach(conn)
	}
	if _, err := mon.run(ctx, "getfd", map[string]string{"fdname": "wisp-restore"}, f); err != nil {
		return nil, err
	}
	if _, err := mon.run(ctx, "migrate-incoming", map[string]string{"uri": "fd:wisp-restore"}, nil); err != nil {
		return nil, err
	}
	if err := mon.waitMigration(ctx); err != nil {
		return nil, err
	}
	if _, err := mon.run(ctx, "cont", nil, nil); err != nil {
		return nil, err
	}
	inst.woke.Restore = time.Since(t0)
	seed := make([]byte, 32)
	rand.Read(seed)
	if kept != nil {
		inst.woke.KeptSession = inst.resume(ctx, kept, seed)
		kept = nil // the instance's now, or closed
	}
	if !inst.woke.KeptSession {
		// The guest still serves the session of the QEMU that saved it;
		// it notices only when our first Hello breaks that session, so
		// resend soon.
		if err := inst.connectEvery(ctx, 10*time.Millisecond); err != nil {
			return nil, err
		}
		if err := inst.Agent().SetTime(ctx, time.Now(), seed); err != nil {
			return nil, fmt.Errorf("set guest clock: %w", err)
		}
	}
	inst.woke.Handshake = time.Since(t0) - inst.woke.Restore
	return inst, nil
}
