package sprite

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/network"
	"github.com/wisp-sh/wisp/internal/storage"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// Images supplies what sprites boot from.
type Images interface {
	// Root returns the root image file of a built image.
	Root(name string) (string, error)
	// Boot returns the kernel and initramfs VM backends boot, fetching or
	// building them when missing.
	Boot(ctx context.Context) (kernel, initrd string, err error)
}

// Limits bound what a create may ask for.
type Limits struct {
	MaxCPUs      int
	MaxMemoryMiB int
	MaxDiskGiB   int
	MaxPids      int
}

// Options configure a Manager.
type Options struct {
	DataDir   string // sprites live in DataDir/sprites/<id>
	AgentPath string // the agent binary, for sandbox backends
	Backend   string // default backend name: a key of Drivers
	Drivers   map[string]vmm.Driver
	// Unavailable says why a backend missing from Drivers is not offered
	// here (the hint of a create that asks for it).
	Unavailable map[string]string
	Images      Images
	Defaults    CreateOptions // CPUs, MemoryMiB, DiskGiB, Image when a create leaves them zero
	Limits      Limits
	BootTimeout time.Duration // bounds one start, watchdog retries included
	// Clone copies a file cheaply (a reflink in the storage pool); nil
	// means a sparse copy.
	Clone func(src, dst string) error
	// WarmSnapshots names the backends whose creates restore a saved,
	// freshly booted sprite of their kind instead of starting cold: those
	// where a restore beats a start (QEMU: no kernel boot).
	WarmSnapshots map[string]bool
	// Idle is how long a sprite may sit unused before it sleeps, when
	// its own setting does not say; 0 means never.
	Idle time.Duration
	// BootID identifies this boot of the host ("" reads the kernel's).
	BootID string
	// Sync writes the files in folders to stable storage; nil means
	// storage.SyncFiles.
	Sync func(dirs ...string) error
	// Net gives sprites their networks; nil: sprites have none.
	Net Network
	// Allow, when set, is asked before a sprite starts or wakes; its
	// error refuses (the meter holds a sprite at its cap this way).
	Allow func(rec Sprite) error
	// Observe, when set, is told how long each create and wake took and
	// whether it failed (the daemon's latency metrics).
	Observe func(op string, took time.Duration, err error)
	// UIDs are the host uids of sprites' VMMs, one each.
	UIDs UIDRange
	// StorePath is the records' file, outside the storage pool so that a
	// full pool cannot stop the daemon from recording; "" means
	// DataDir/wisp.db. A store found at DataDir/wisp.db is moved there.
	StorePath string
	// FreeBytes returns the free space of the filesystem holding path;
	// nil: statfs.
	FreeBytes func(path string) (int64, error)
	// Placement, in cluster mode, reserves names across hosts and is told
	// of sprites at rest and destroyed; nil: this host alone.
	Placement Placement
}

func (m *Manager) observe(op string, t0 time.Time, err error) {
	if m.opt.Observe != nil {
		m.opt.Observe(op, time.Since(t0), err)
	}
}

// CreateOptions is what a user asks for.
type CreateOptions struct {
	Name      string `json:"name"`
	CPUs      int    `json:"cpus,omitempty"`
	MemoryMiB int    `json:"memory_mib,omitempty"`
	DiskGiB   int    `json:"disk_gib,omitempty"`
	Image     string `json:"image,omitempty"`
	Backend   string `json:"backend,omitempty"`
	// Pids is the process limit inside the sprite (0: the default).
	Pids int `json:"pids,omitempty"`
	// IdleSeconds: 0 the daemon's default, -1 never sleep.
	IdleSeconds int `json:"idle_seconds,omitempty"`
	// Env is KEY=VALUE kept for every exec and console.
	Env []string `json:"env,omitempty"`
	// Policy is the egress policy (default: allow-all).
	Policy network.Policy `json:"policy,omitzero"`
}

// Manager owns the sprites: their records, folders and running instances.
// VMs are supervised under the Manager, never under a request's context.
type Manager struct {
	opt   Options
	log   *slog.Logger
	store *Store

	mu          sync.Mutex
	sprites     map[string]*entry
	pendingUIDs map[int]bool // allocated to records not yet in sprites

	tplMu       sync.Mutex
	tplBuilding map[string]bool // warm snapshots being built

	diskMu sync.Mutex // making base disks (disks.go)

	// Goroutines the Manager started (instance watchers, warm snapshot
	// builds, idle sleeps, background syncs of sleep state): Close ends
	// and waits for them all; none starts once it began (see spawn).
	bgMu      sync.Mutex
	bg        sync.WaitGroup
	syncSlots chan struct{} // at most cap() background syncs at once
	closing   context.Context
	close     context.CancelFunc
}

// spawn runs fn in a goroutine that Close waits for; fn must return soon
// once m.closing is done. After Close began it does not run fn and
// returns false.
func (m *Manager) spawn(fn func()) bool {
	m.bgMu.Lock()
	defer m.bgMu.Unlock()
	if m.closing.Err() != nil {
		return false
	}
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		fn()
	}()
	return true
}

// entry is one sprite in memory. op serialises state changes of the sprite;
// rec and inst are read under Manager.mu and written under both.
type entry struct {
	op   sync.Mutex
	rec  Sprite
	inst vmm.Instance

	// Activity, under Manager.mu: requests using the sprite now, and when
	// the last one ended. The idle loop reads them.
	active     int
	lastActive time.Time
	// failed is the last wake or start that failed, for ready's callers
	// that waited for it (under op).
	failed attempt
	// gone: the sprite left this host (Park) while callers held the
	// entry; written under op and Manager.mu.
	gone bool
	// woke is how the last wake went (under Manager.mu).
	woke *WakeTimes
}

// NewManager opens the store in opt.DataDir.
func NewManager(log *slog.Logger, opt Options) (*Manager, error) {
	if err := os.MkdirAll(filepath.Join(opt.DataDir, "sprites"), 0o700); err != nil {
		return nil, err
	}
	old := filepath.Join(opt.DataDir, "wisp.db")
	if opt.StorePath == "" {
		opt.StorePath = old
	}
	if err := moveStore(log, old, opt.StorePath); err != nil {
		return nil, err
	}
	if opt.FreeBytes == nil {
		opt.FreeBytes = storage.FreeBytes
	}
	st, err := OpenStore(opt.StorePath)
	if err != nil {
		return nil, err
	}
	if opt.BootTimeout == 0 {
		opt.BootTimeout = 3 * time.Minute
	}
	if opt.Clone == nil {
		opt.Clone = storage.CopyFile
	}
	if opt.Sync == nil {
		opt.Sync = storage.SyncFiles
	}
	if opt.BootID == "" {
		b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("read the host's boot ID: %w", err)
		}
		opt.BootID = strings.TrimSpace(string(b))
	}
	m := &Manager{opt: opt, log: log, store: st, sprites: map[string]*entry{}, pendingUIDs: map[int]bool{}, tplBuilding: map[string]bool{}, syncSlots: make(chan struct{}, 2)}
	m.closing, m.close = context.WithCancel(context.Background())
	m.cleanDisks()
	return m, nil
}

// moveStore moves a store at old (in the pool, where daemons kept it
// before) to path, once: the move is durable before old goes. A store at
// both is the leftover of a move cut short: path's is the one.
func moveStore(log *slog.Logger, old, path string) error {
	if old == path {
		return nil
	}
	if _, err := os.Stat(old); err != nil {
		return nil // nothing to move
	}
	if _, err := os.Stat(path); err == nil {
		log.Warn("removing the records' old file, moved before", "old", old, "path", path)
		return os.Remove(old)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := storage.MoveFile(old, path); err != nil {
		return fmt.Errorf("move the records from %s to %s: %w", old, path, err)
	}
	log.Info("moved the records out of the storage pool", "from", old, "to", path)
	return nil
}

// createReserve is the room a create or fork wants in the pool beyond the
// sprite's memory (its memory or sleep file): its disk's first writes,
// its logs and records.
const createReserve = 512 << 20

// checkSpace fails with ErrNoSpace, before anything is made, when the pool
// has no room for rec.
func (m *Manager) checkSpace(rec Sprite) error {
	free, err := m.opt.FreeBytes(filepath.Join(m.opt.DataDir, "sprites"))
	if err != nil {
		return nil // unknown: the writes themselves will tell
	}
	need := int64(rec.MemoryMiB)<<20 + createReserve
	if free < need {
		return errdefs.WithHint(fmt.Errorf("the storage pool is too full for sprite %q: %d MiB free, it needs at least %d MiB: %w", rec.Name, free>>20, need>>20, errdefs.ErrNoSpace),
			"free space in the pool (`wisp destroy`, `wisp checkpoint delete`, `wisp image rm`) or give wispd a larger --pool-size")
	}
	return nil
}

func (m *Manager) dir(s Sprite) string { return filepath.Join(m.opt.DataDir, "sprites", s.ID) }

// DiskPath is the sprite's writable root disk.
func (m *Manager) DiskPath(s Sprite) string { return filepath.Join(m.dir(s), "disk.img") }

// logDir holds the sprite's logs: a small tmpfs of its own (see
// vmm.MountLogDir), outside the sprite's folder so that removing the
// folder never meets a mount.
func (m *Manager) logDir(s Sprite) string { return filepath.Join(m.opt.DataDir, "logs", s.ID) }

// ConsolePath is the sprite's serial console log.
func (m *Manager) ConsolePath(s Sprite) string { return filepath.Join(m.logDir(s), vmm.ConsoleLog) }

// removeLogs removes the sprite's log folder (its tmpfs unmounted).
func (m *Manager) removeLogs(s Sprite) {
	if err := vmm.RemoveLogDir(m.logDir(s)); err != nil {
		m.log.Warn("remove log folder", LogSprite, s.Name, LogErr, err)
	}
}

// persist writes rec durably and then publishes it in memory. It is the
// one writer of a sprite's record, and so of its state: a change of state
// must be a move of the transition table, or nothing is written.
func (m *Manager) persist(e *entry, rec Sprite) error {
	m.mu.Lock()
	from := e.rec.State
	m.mu.Unlock()
	if rec.State != from && !CanMove(from, rec.State) {
		return fmt.Errorf("sprite %q cannot move from state %s to %s: %w", rec.Name, from, rec.State, errdefs.ErrState)
	}
	if err := m.store.Put(rec); err != nil {
		return fmt.Errorf("persist sprite %q: %w", rec.Name, err)
	}
	m.mu.Lock()
	e.rec = rec
	m.mu.Unlock()
	return nil
}

func (m *Manager) lookup(name string) (*entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.sprites[name]
	if !ok {
		return nil, errdefs.WithHint(fmt.Errorf("sprite %q: %w", name, errdefs.ErrNotFound), "see `wisp list`")
	}
	return e, nil
}

// Get returns a sprite's record, with its disk usage.
func (m *Manager) Get(name string) (Sprite, error) {
	e, err := m.lookup(name)
	if err != nil {
		return Sprite{}, err
	}
	m.mu.Lock()
	rec, inst, woke := e.rec, e.inst, e.woke
	m.mu.Unlock()
	rec.LastWake = woke
	rec.DiskUsedBytes, _ = storage.Usage(m.DiskPath(rec))
	m.netStats(&rec)
	if c, ok := inst.(vmm.Confined); ok && rec.State == Running {
		if cf, err := c.Confinement(); err == nil {
			rec.Confinement = &cf
		}
	}
	return rec, nil
}

// Confinements reports what confines each running sprite's VMM or
// sandbox now, by name.
func (m *Manager) Confinements() map[string]vmm.Confinement {
	m.mu.Lock()
	insts := map[string]vmm.Instance{}
	for name, e := range m.sprites {
		if e.inst != nil && e.rec.State == Running {
			insts[name] = e.inst
		}
	}
	m.mu.Unlock()
	out := map[string]vmm.Confinement{}
	for name, inst := range insts {
		if c, ok := inst.(vmm.Confined); ok {
			if cf, err := c.Confinement(); err == nil {
				out[name] = cf
			}
		}
	}
	return out
}

// List returns all sprites by name.
func (m *Manager) List() []Sprite {
	m.mu.Lock()
	out := make([]Sprite, 0, len(m.sprites))
	for _, e := range m.sprites {
		out = append(out, e.rec)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	for i := range out {
		out[i].DiskUsedBytes, _ = storage.Usage(m.DiskPath(out[i]))
		m.netStats(&out[i])
	}
	return out
}

func newMAC() string { return "52:54:00:" + randHex(1) + ":" + randHex(1) + ":" + randHex(1) }

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (m *Manager) validate(o *CreateOptions) error {
	if err := ValidateName(o.Name); err != nil {
		return err
	}
	d := m.opt.Defaults
	if o.CPUs == 0 {
		o.CPUs = d.CPUs
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = d.MemoryMiB
	}
	if o.DiskGiB == 0 {
		o.DiskGiB = d.DiskGiB
	}
	if o.Image == "" {
		o.Image = d.Image
	}
	if o.Pids == 0 {
		o.Pids = cmp.Or(d.Pids, vmm.DefaultPids)
	}
	if o.Backend == "" || o.Backend == "auto" {
		o.Backend = m.opt.Backend
	}
	l := m.opt.Limits
	var errs []error
	errs = append(errs, l.sizeErrors(Size{o.CPUs, o.MemoryMiB, o.DiskGiB}, 1)...)
	if maxPids := cmp.Or(l.MaxPids, MaxPids); o.Pids < MinPids || o.Pids > maxPids {
		errs = append(errs, fmt.Errorf("pids %d out of range %d-%d", o.Pids, MinPids, maxPids))
	}
	var hint string
	if _, ok := m.opt.Drivers[o.Backend]; !ok {
		errs = append(errs, fmt.Errorf("backend %q is not available on this host", o.Backend))
		hint = m.opt.Unavailable[o.Backend]
	}
	for _, kv := range o.Env {
		if err := validateEnv(kv); err != nil {
			errs = append(errs, err)
		}
	}
	if err := o.Policy.Normalize(); err != nil {
		errs = append(errs, err)
	}
	if o.IdleSeconds < -1 {
		errs = append(errs, fmt.Errorf("idle %d s: want seconds, 0 for the default or -1 for never", o.IdleSeconds))
	}
	if len(errs) > 0 {
		err := fmt.Errorf("%w: %w", errors.Join(errs...), errdefs.ErrInvalid)
		if hint != "" {
			return errdefs.WithHint(err, hint)
		}
		return err
	}
	return nil
}

// Create makes a sprite and boots it. On any failure nothing is left
// behind: every step registers its undo.
func (m *Manager) Create(ctx context.Context, o CreateOptions) (_ Sprite, err error) {
	defer func(t0 time.Time) { m.observe("create", t0, err) }(time.Now())
	if err := m.validate(&o); err != nil {
		return Sprite{}, err
	}
	root, err := m.opt.Images.Root(o.Image)
	if err != nil {
		return Sprite{}, err
	}
	rec := Sprite{
		ID: randHex(5), Name: o.Name, State: Creating, Backend: o.Backend,
		CPUs: o.CPUs, MemoryMiB: o.MemoryMiB, DiskGiB: o.DiskGiB, Image: o.Image,
		MAC: newMAC(), MachineID: randHex(16), Pids: o.Pids, IdleSeconds: o.IdleSeconds, CreatedAt: time.Now().UTC(),
		Env:    o.Env,
		Policy: o.Policy,
	}
	if err := m.checkSpace(rec); err != nil {
		return Sprite{}, err
	}
	unreserve, err := m.reserve(ctx, o.Name)
	if err != nil {
		return Sprite{}, err
	}
	uidDone, err := m.allocUID(&rec)
	if err != nil {
		unreserve()
		return Sprite{}, err
	}
	defer uidDone()
	if err := m.allocAddress(&rec); err != nil {
		unreserve()
		return Sprite{}, err
	}
	if err := m.store.Insert(rec); err != nil {
		m.dropNetwork(rec)
		unreserve()
		return Sprite{}, errdefs.WithHint(err, "choose another name, or `wisp destroy "+o.Name+"` first")
	}
	e := &entry{rec: rec}
	e.op.Lock()
	defer e.op.Unlock()
	m.mu.Lock()
	m.sprites[o.Name] = e
	m.mu.Unlock()
	uidDone()
	log := m.log.With(LogSprite, o.Name)

	// The sprite's life is not the request's.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.opt.BootTimeout)
	defer cancel()
	var undo undoStack
	undo.push("record", func() error {
		m.mu.Lock()
		delete(m.sprites, o.Name)
		m.mu.Unlock()
		return m.store.Delete(o.Name)
	})
	undo.push("network", func() error { return m.dropNetwork(rec) })
	undo.push("reservation", func() error { unreserve(); return nil })
	fail := func(err error) (Sprite, error) {
		log.Warn("create failed", LogErr, err)
		return Sprite{}, errors.Join(noSpace(err), undo.run())
	}
	dir := m.dir(rec)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	undo.push("folder", func() error { m.removeLogs(rec); return os.RemoveAll(dir) })
	inst, warm := vmm.Instance(nil), false
	if m.opt.WarmSnapshots[rec.Backend] {
		inst, warm = m.fromTemplate(ctx, rec, root)
	}
	if !warm {
		if err := m.createDisk(ctx, o.Image, root, m.DiskPath(rec), o.DiskGiB); err != nil {
			return fail(fmt.Errorf("create disk: %w", err))
		}
		var err error
		if inst, err = m.boot(ctx, rec); err != nil {
			return fail(err)
		}
		if m.opt.WarmSnapshots[rec.Backend] {
			m.spawn(func() { m.buildTemplate(rec, root) })
		}
	}
	undo.push("instance", func() error { kill(inst); return nil })
	rec.Origin = "boot"
	if warm {
		rec.Origin = "warm-snapshot"
	}
	if err := m.running(e, rec, inst); err != nil {
		return fail(err)
	}
	log.Info("sprite created", "backend", rec.Backend, "accel", inst.Info().Accel, "warm", warm)
	return m.Get(o.Name)
}

// spec builds what the driver needs, the sprite's network made ready.
func (m *Manager) spec(ctx context.Context, rec Sprite) (vmm.Spec, error) {
	s := vmm.Spec{
		ID: rec.ID, Name: rec.Name, Dir: m.dir(rec), CPUs: rec.CPUs, MemoryMiB: rec.MemoryMiB,
		Disk: m.DiskPath(rec), DiskGiB: rec.DiskGiB, Agent: m.opt.AgentPath, MAC: rec.MAC, MachineID: rec.MachineID,
		Pids: pidsOf(rec), LogDir: m.logDir(rec), UID: rec.HostUID,
	}
	if err := vmm.MountLogDir(s.LogDir); err != nil {
		m.log.Warn("logs not bounded", LogSprite, rec.Name, LogErr, err)
	}
	if d, err := m.driver(rec); err == nil {
		if s.Net, err = m.attachNetwork(ctx, rec, d); err != nil {
			return s, err
		}
	}
	if rec.Backend == "qemu" {
		k, i, err := m.opt.Images.Boot(ctx)
		if err != nil {
			return s, err
		}
		s.Kernel, s.Initrd = k, i
	}
	return s, nil
}

func (m *Manager) driver(rec Sprite) (vmm.Driver, error) {
	d, ok := m.opt.Drivers[rec.Backend]
	if !ok {
		return nil, fmt.Errorf("sprite %q uses backend %q, not available on this host: %w", rec.Name, rec.Backend, errdefs.ErrUnavailable)
	}
	return d, nil
}

// boot starts the sprite's instance (running then records and watches it).
func (m *Manager) boot(ctx context.Context, rec Sprite) (vmm.Instance, error) {
	d, err := m.driver(rec)
	if err != nil {
		return nil, err
	}
	spec, err := m.spec(ctx, rec)
	if err != nil {
		return nil, err
	}
	return d.Start(ctx, spec)
}

// running records a booted instance and starts watching it.
func (m *Manager) running(e *entry, rec Sprite, inst vmm.Instance) error {
	info := inst.Info()
	rec.State, rec.Accel, rec.Pid, rec.StartedAt, rec.LastError = Running, info.Accel, info.Pid, time.Now().UTC(), ""
	if err := m.persist(e, rec); err != nil {
		return err
	}
	m.mu.Lock()
	e.inst = inst
	m.mu.Unlock()
	m.spawn(func() { m.watch(e, inst) })
	return nil
}

// takeInstance detaches e's instance from it (the caller now owns it; the
// watcher will not mark the sprite stopped when it ends).
func (m *Manager) takeInstance(e *entry) vmm.Instance {
	m.mu.Lock()
	defer m.mu.Unlock()
	inst := e.inst
	e.inst = nil
	return inst
}

// kill ends inst (if any) at once and lets go of it.
func kill(inst vmm.Instance) {
	if inst == nil {
		return
	}
	inst.Kill()
	<-inst.Done()
	inst.Close()
}

// watch marks the sprite stopped when its instance dies on its own. It
// ends when the Manager closes (the instance runs on, for the next daemon).
func (m *Manager) watch(e *entry, inst vmm.Instance) {
	select {
	case <-inst.Done():
	case <-m.closing.Done():
		return
	}
	e.op.Lock()
	defer e.op.Unlock()
	m.mu.Lock()
	mine := e.inst == inst
	if mine {
		e.inst = nil
	}
	rec := e.rec
	m.mu.Unlock()
	if !mine || rec.State != Running {
		return
	}
	inst.Close()
	rec.State, rec.Pid, rec.LastError = Stopped, 0, "the VM exited unexpectedly; see `wisp logs "+rec.Name+"`"
	m.log.Warn("sprite exited unexpectedly", LogSprite, rec.Name)
	if err := m.persist(e, rec); err != nil {
		m.log.Error("persist", LogSprite, rec.Name, LogErr, err)
	}
}

// Start boots a stopped sprite. Starting a running sprite is a no-op.
func (m *Manager) Start(ctx context.Context, name string) (Sprite, error) {
	return m.change(name, func(e *entry) error { return m.start(ctx, e) })
}

// start boots (or wakes) e, under e.op.
func (m *Manager) start(ctx context.Context, e *entry) error {
	rec := e.rec
	if err := guard(OpStart, rec); err != nil {
		return err
	}
	if rec.State == Running {
		return nil
	}
	if rec.State == Sleeping {
		t0 := time.Now()
		err := m.wake(ctx, e)
		m.observe("wake", t0, err)
		return err
	}
	if m.opt.Allow != nil {
		if err := m.opt.Allow(rec); err != nil {
			return err
		}
	}
	if rec.Pending != nil {
		if err := m.applySize(ctx, e, rec); err != nil {
			return err
		}
		rec = e.rec
	}
	rec.State = Starting
	if err := m.persist(e, rec); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.opt.BootTimeout)
	defer cancel()
	inst, err := m.boot(ctx, rec)
	if err == nil {
		err = m.running(e, rec, inst)
	}
	if err != nil {
		rec.State, rec.LastError = Stopped, err.Error()
		return errors.Join(err, m.persist(e, rec))
	}
	m.afterBoot(ctx, e, true)
	return nil
}

// Stop shuts a running sprite down; its disk keeps everything. Stopping a
// stopped sprite is a no-op.
func (m *Manager) Stop(ctx context.Context, name string) (Sprite, error) {
	return m.change(name, func(e *entry) error {
		rec := e.rec
		if err := guard(OpStop, rec); err != nil {
			return err
		}
		if rec.State == Stopped {
			return nil
		}
		if rec.State == Sleeping {
			// Its processes are given up; the disk keeps everything else.
			rec.State, rec.SleptAt = Stopped, time.Time{}
			if err := m.persist(e, rec); err != nil {
				return err
			}
			os.RemoveAll(m.sleepDir(rec))
			m.atRest(name)
			return nil
		}
		rec.State = Stopping
		if err := m.persist(e, rec); err != nil {
			return err
		}
		if inst := m.takeInstance(e); inst != nil {
			if err := inst.Stop(context.WithoutCancel(ctx)); err != nil {
				m.log.Warn("stop", LogSprite, name, LogErr, err)
			}
		}
		rec.State, rec.Pid = Stopped, 0
		if err := m.persist(e, rec); err != nil {
			return err
		}
		m.log.Info("sprite stopped", LogSprite, name)
		m.atRest(name)
		return nil
	})
}

// Destroy removes a sprite, its VM and its disk.
func (m *Manager) Destroy(ctx context.Context, name string) error {
	e, err := m.lookup(name)
	if err != nil {
		return err
	}
	return m.withOp(e, func() error {
		rec := e.rec
		if err := guard(OpDestroy, rec); err != nil {
			return err
		}
		rec.State = Destroying
		if err := m.persist(e, rec); err != nil {
			return err
		}
		inst := m.takeInstance(e)
		if err := m.remove(e, inst); err != nil {
			return err
		}
		m.log.Info("sprite destroyed", LogSprite, name)
		if m.opt.Placement != nil {
			m.opt.Placement.Removed(context.WithoutCancel(ctx), rec)
		}
		return nil
	})
}

// remove ends inst, deletes the network and the folder and then the record.
func (m *Manager) remove(e *entry, inst vmm.Instance) error {
	kill(inst)
	if err := m.dropNetwork(e.rec); err != nil {
		return err
	}
	if err := os.RemoveAll(m.dir(e.rec)); err != nil {
		return err
	}
	m.removeLogs(e.rec)
	if err := m.store.Delete(e.rec.Name); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.sprites, e.rec.Name)
	m.mu.Unlock()
	return nil
}

// Agent returns the agent client of a sprite for a use of it (an exec, a
// console, a copy, a file call), waking it when it sleeps and starting it
// when it is stopped, and marks the sprite active until release is called.
// Many concurrent callers cause one wake or start.
func (m *Manager) Agent(ctx context.Context, name string) (ag *agent.Client, release func(), err error) {
	return m.agent(ctx, name, true)
}

// agent is Agent; without cold, a stopped sprite is refused.
func (m *Manager) agent(ctx context.Context, name string, cold bool) (ag *agent.Client, release func(), err error) {
	e, release, err := m.hold(name)
	if err != nil {
		return nil, nil, err
	}
	inst, _, err := m.ready(ctx, e, cold)
	if err != nil {
		release()
		return nil, nil, err
	}
	return inst.Agent(), release, nil
}

// withOp runs fn holding the sprite's operation lock.
func (m *Manager) withOp(e *entry, fn func() error) error {
	e.op.Lock()
	defer e.op.Unlock()
	if e.gone {
		return errMoved(e.rec.Name)
	}
	return fn()
}

// change runs fn on the named sprite under its operation lock and returns
// the sprite as it is afterwards: the frame of every verb that changes one.
func (m *Manager) change(name string, fn func(e *entry) error) (Sprite, error) {
	e, err := m.lookup(name)
	if err != nil {
		return Sprite{}, err
	}
	if err := m.withOp(e, func() error { return fn(e) }); err != nil {
		return Sprite{}, err
	}
	return m.Get(name)
}

// Recover loads the records after a daemon start and reconciles them with
// what runs: running VMs are adopted, half-made sprites removed, half-done
// destroys finished, dead VMs marked stopped.
func (m *Manager) Recover(ctx context.Context) error {
	m.cleanTemplates(ctx)
	recs, err := m.store.List()
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, rec := range recs {
		keep[rec.ID] = true
		if a, err := netip.ParseAddr(rec.Address); err == nil && m.opt.Net != nil {
			m.opt.Net.Reserve(a)
		}
	}
	if m.opt.Net != nil {
		// Namespaces, links and rules of sprites that are gone (destroyed
		// while no daemon ran, warm snapshot builds).
		if err := m.opt.Net.Prune(keep); err != nil {
			m.log.Warn("removing stale networks", LogErr, err)
		}
	}
	m.mu.Lock()
	for _, rec := range recs {
		m.sprites[rec.Name] = &entry{rec: rec} // their uids are taken
	}
	m.mu.Unlock()
	for i, rec := range recs {
		if rec.HostUID != 0 {
			continue
		}
		// A record from before sprites had uids of their own: its next
		// start runs as one.
		done, err := m.allocUID(&recs[i])
		if err == nil && recs[i].HostUID != 0 {
			m.mu.Lock()
			e := m.sprites[rec.Name]
			m.mu.Unlock()
			err = m.persist(e, recs[i])
		}
		if done != nil {
			done()
		}
		if err != nil {
			m.log.Warn("no host uid of its own", LogSprite, rec.Name, LogErr, err)
			recs[i].HostUID = 0
		}
	}
	var wg sync.WaitGroup
	for _, rec := range recs {
		m.mu.Lock()
		e := m.sprites[rec.Name]
		m.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.op.Lock()
			defer e.op.Unlock()
			if err := m.recover(ctx, e); err != nil {
				m.log.Error("recover", LogSprite, rec.Name, LogErr, err)
			}
		}()
	}
	wg.Wait()
	m.cleanLogs()
	return nil
}

// cleanLogs removes the log folders of sprites that are no more (a crash
// in the middle of a destroy, a warm snapshot's throwaway sprite).
func (m *Manager) cleanLogs() {
	live := map[string]bool{}
	for _, rec := range m.List() {
		live[rec.ID] = true
	}
	ents, _ := os.ReadDir(filepath.Join(m.opt.DataDir, "logs"))
	for _, d := range ents {
		if !live[d.Name()] {
			m.removeLogs(Sprite{ID: d.Name(), Name: d.Name()})
		}
	}
}

func (m *Manager) recover(ctx context.Context, e *entry) error {
	rec := e.rec
	log := m.log.With(LogSprite, rec.Name)
	m.cleanCheckpoints(rec)
	var (
		inst     vmm.Instance
		notAlive = "the VM was not running when the daemon started"
	)
	if d, err := m.driver(rec); err == nil && rec.State != Stopped && rec.State != Sleeping {
		spec, _ := m.spec(ctx, rec)
		inst, err = d.Adopt(ctx, spec)
		if err != nil && !errors.Is(err, vmm.ErrNotRunning) && ctx.Err() == nil {
			// A busy host may just be slow: try once more.
			log.Warn("adopt failed; trying again", LogErr, err)
			inst, err = d.Adopt(ctx, spec)
		}
		if err != nil && !errors.Is(err, vmm.ErrNotRunning) && ctx.Err() == nil {
			// Something runs that does not answer: end it, or it would
			// run on beside whatever uses the sprite's disk next.
			log.Error("adopt failed again; ending the VM", LogErr, err)
			notAlive = fmt.Sprintf("the daemon could not reach the VM when it started, and ended it (%v)", err)
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if rerr := d.Reap(rctx, spec); rerr != nil {
				log.Error("could not end the VM", LogErr, rerr)
				notAlive = fmt.Sprintf("the daemon could not reach the VM when it started (%v), nor end it (%v)", err, rerr)
			}
			cancel()
		}
	}
	if inst == nil && ctx.Err() != nil {
		// The daemon is stopping: leave the record for the next one.
		return context.Cause(ctx)
	}
	stopped := func(why string) error {
		kill(inst)
		rec.State, rec.Pid, rec.LastError = Stopped, 0, why
		return m.persist(e, rec)
	}
	switch rec.State {
	case Creating, Destroying:
		log.Info("removing sprite left half-done", "state", rec.State)
		return m.remove(e, inst)
	case Starting, Running, Waking, Restoring:
		if inst != nil {
			log.Info("adopted running sprite", "pid", inst.Info().Pid)
			rec.State = Running
			if err := m.running(e, rec, inst); err != nil {
				return err
			}
			// The last daemon may have died between recording a change
			// of the services and telling the guest.
			m.afterBoot(ctx, e, false)
			return nil
		}
		if rec.State == Waking {
			// The wake did not finish; the sleep state is still there.
			rec.State = Sleeping
			if err := m.persist(e, rec); err != nil {
				return err
			}
			m.syncSleepLater(e, rec)
			return nil
		}
		return stopped(fmt.Sprintf("%s (state %s)", notAlive, rec.State))
	case Stopping:
		if inst != nil {
			inst.Stop(ctx)
			inst = nil
		}
		return stopped("")
	case Suspending:
		// A sleep was cut short. Its state is complete only if the backend
		// finished writing it (it renames it into place last).
		if _, err := os.Stat(m.sleepDir(rec)); err == nil {
			kill(inst)
			rec.State, rec.Pid, rec.SleptAt = Sleeping, 0, time.Now().UTC()
			if err := m.persist(e, rec); err != nil {
				return err
			}
			m.syncSleepLater(e, rec)
			return nil
		}
		if inst != nil {
			rec.State = Running
			return m.running(e, rec, inst)
		}
		return stopped("the daemon stopped while the sprite was going to sleep")
	case Sleeping:
		m.syncSleepLater(e, rec) // the last daemon may not have finished
	}
	return nil
}

// Close lets go of every instance, leaving the VMs running for the next
// daemon to adopt, and closes the store.
func (m *Manager) Close() error {
	m.bgMu.Lock()
	m.close()
	m.bgMu.Unlock()
	m.bg.Wait()
	m.mu.Lock()
	for _, e := range m.sprites {
		if e.inst != nil {
			e.inst.Close()
		}
	}
	m.mu.Unlock()
	return m.store.Close()
}

// Bounds of a sprite's process limit. A gVisor sprite's host tasks are
// about twice its processes: MaxPids keeps one sprite well under the
// 32,768 pids of a default host.
const (
	MinPids = 16
	MaxPids = 8192
)

// pidsOf returns rec's process limit.
func pidsOf(rec Sprite) int { return cmp.Or(rec.Pids, vmm.DefaultPids) }
