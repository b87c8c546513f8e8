package sprite

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/storage"
)

// Placement is told of the changes that concern other hosts, when the
// sprites are spread over several (cluster mode; nil: this host alone).
type Placement interface {
	// Reserve is asked before a sprite of this name is made here (a
	// create or a fork); its error refuses the create (the name is taken
	// on another host). release undoes the reservation when the create
	// fails; after a success the sprite is this host's.
	Reserve(ctx context.Context, name string) (release func(), err error)
	// Removed is told after a sprite was destroyed here.
	Removed(ctx context.Context, rec Sprite)
	// AtRest is told that a sprite went to sleep or stopped (from a
	// goroutine the Manager waits for at Close; it must return soon once
	// ctx is done).
	AtRest(ctx context.Context, name string)
}

// RestFile is one file of a sprite at rest: Name is its path inside the
// sprite's folder, Path where it is now.
type RestFile struct {
	Name string
	Path string
}

// restDirsSkipped are the folders of a sprite that do not travel with it:
// checkpoints stay on the host that took them.
var restDirsSkipped = map[string]bool{"checkpoints": true}

// restFiles lists the files that make rec at rest: a stopped sprite's
// disk and secrets; a sleeping sprite's whole folder (its backend keeps
// memory and device state where it chooses), not crossing mounts, regular
// files only.
func (m *Manager) restFiles(rec Sprite) ([]RestFile, error) {
	dir := m.dir(rec)
	if rec.State == Stopped {
		var out []RestFile
		for _, p := range []string{m.DiskPath(rec), m.secretsPath(rec)} {
			if _, err := os.Stat(p); err == nil {
				out = append(out, RestFile{Name: filepath.Base(p), Path: p})
			}
		}
		return out, nil
	}
	var root syscall.Stat_t
	if err := syscall.Stat(dir, &root); err != nil {
		return nil, err
	}
	var out []RestFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			var st syscall.Stat_t
			if rel != "." && (restDirsSkipped[rel] || syscall.Stat(p, &st) != nil || st.Dev != root.Dev) {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() {
			out = append(out, RestFile{Name: filepath.ToSlash(rel), Path: p})
		}
		return nil
	})
	return out, err
}

// CopyRest copies the files of a sprite at rest (sleeping or stopped)
// into dst, cheaply (reflinks in the pool), under the sprite's lock, and
// returns its record as of the copy: what a publish sends to other hosts
// while the sprite may already be woken again here.
func (m *Manager) CopyRest(name, dst string) (Sprite, []RestFile, error) {
	e, err := m.lookup(name)
	if err != nil {
		return Sprite{}, nil, err
	}
	var rec Sprite
	var out []RestFile
	err = m.withOp(e, func() error {
		rec = e.rec
		if rec.State != Sleeping && rec.State != Stopped {
			return stateError("publish", rec)
		}
		files, err := m.restFiles(rec)
		if err != nil {
			return err
		}
		out = out[:0]
		for _, f := range files {
			p := filepath.Join(dst, filepath.FromSlash(f.Name))
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				return err
			}
			if err := m.opt.Clone(f.Path, p); err != nil {
				return fmt.Errorf("copy %s of sprite %q: %w", f.Name, name, err)
			}
			out = append(out, RestFile{Name: f.Name, Path: p})
		}
		return nil
	})
	return rec, out, err
}

// errMoved is what an operation finds that waited for a sprite which
// left this host meanwhile.
func errMoved(name string) error {
	return errdefs.WithHint(fmt.Errorf("sprite %q has moved off this host: %w", name, errdefs.ErrNotFound), "try again: the request goes to the host that has it now")
}

// Park takes a sprite at rest off this host: its record goes, its network
// and uid are freed, and its folder moves to dst (the warm copy a later
// Adopt of the same generation reuses; "" removes it). unchanged is asked
// under the sprite's lock: false (it was woken, or changed, since it was
// published) keeps the sprite here and fails with ErrConflict.
func (m *Manager) Park(name, dst string, unchanged func(Sprite) bool) error {
	e, err := m.lookup(name)
	if err != nil {
		return err
	}
	return m.withOp(e, func() error {
		rec := e.rec
		if (rec.State != Sleeping && rec.State != Stopped) || !unchanged(rec) {
			return fmt.Errorf("sprite %q changed since it was published: %w", name, errdefs.ErrConflict)
		}
		// The record goes first: the sprite is published, so a crash that
		// leaves its folder behind loses a warm copy, never the sprite.
		if err := m.store.Delete(name); err != nil {
			return err
		}
		m.mu.Lock()
		delete(m.sprites, name)
		e.gone = true
		m.mu.Unlock()
		var errs []error
		errs = append(errs, m.leaveNetwork(rec))
		m.removeLogs(rec)
		if dst == "" {
			errs = append(errs, os.RemoveAll(m.dir(rec)))
		} else {
			os.RemoveAll(dst)
			if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
				errs = append(errs, err)
			} else if err := os.Rename(m.dir(rec), dst); err != nil {
				errs = append(errs, err, os.RemoveAll(m.dir(rec)))
			}
		}
		m.log.Info("sprite parked", LogSprite, name, "warm_copy", dst)
		return errors.Join(errs...)
	})
}

// Adopt takes in a sprite at rest whose files are in dir (fetched from
// another host's publish, or this host's warm copy): the folder moves into
// place and rec becomes this host's record, with a host uid of this host
// and its own address kept (a sleeping guest's memory holds it). Its
// checkpoints stayed on the host that took them. The name must be free
// here.
func (m *Manager) Adopt(ctx context.Context, rec Sprite, dir string) (Sprite, error) {
	if rec.State != Sleeping && rec.State != Stopped {
		return Sprite{}, fmt.Errorf("adopt sprite %q in state %s: only a sleeping or stopped sprite moves: %w", rec.Name, rec.State, errdefs.ErrInvalid)
	}
	if err := ValidateName(rec.Name); err != nil {
		return Sprite{}, err
	}
	if _, ok := m.opt.Drivers[rec.Backend]; !ok {
		return Sprite{}, fmt.Errorf("sprite %q runs on %s, which this host does not offer: %w", rec.Name, rec.Backend, errdefs.ErrUnavailable)
	}
	if m.dirOf(rec.ID) != "" {
		return Sprite{}, fmt.Errorf("sprite %q: a sprite with its id is here already: %w", rec.Name, errdefs.ErrExists)
	}
	rec.Checkpoints, rec.Pid, rec.HostUID = nil, 0, 0
	rec.DiskUsedBytes, rec.NetRxBytes, rec.NetTxBytes, rec.Confinement, rec.LastWake = 0, 0, 0, nil, nil
	// The files were made durable by whoever put them in dir.
	rec.SleptBoot, rec.SleepSynced = m.opt.BootID, true
	uidDone, err := m.allocUID(&rec)
	if err != nil {
		return Sprite{}, err
	}
	defer uidDone()
	if rec.Address != "" && m.opt.Net != nil {
		a, err := netip.ParseAddr(rec.Address)
		if err != nil {
			return Sprite{}, fmt.Errorf("sprite %q: bad address %q: %w", rec.Name, rec.Address, errdefs.ErrInvalid)
		}
		if other := m.addressUser(rec.Address); other != "" {
			return Sprite{}, fmt.Errorf("sprite %q: its address %s is taken here by %q: %w", rec.Name, a, other, errdefs.ErrConflict)
		}
		m.opt.Net.Reserve(a)
	}
	if err := os.Rename(dir, m.dir(rec)); err != nil {
		m.dropNetwork(rec)
		return Sprite{}, err
	}
	if err := storage.SyncDir(filepath.Dir(m.dir(rec))); err != nil {
		m.log.Warn("sync sprites folder", LogErr, err)
	}
	if err := m.store.Insert(rec); err != nil {
		m.dropNetwork(rec)
		os.RemoveAll(m.dir(rec))
		return Sprite{}, err
	}
	m.mu.Lock()
	m.sprites[rec.Name] = &entry{rec: rec, lastActive: time.Now()}
	m.mu.Unlock()
	uidDone()
	m.log.Info("sprite adopted", LogSprite, rec.Name, "state", rec.State)
	return m.Get(rec.Name)
}

// dirOf returns the name of the sprite with this id here, "" if none.
func (m *Manager) dirOf(id string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, e := range m.sprites {
		if e.rec.ID == id {
			return name
		}
	}
	return ""
}

// addressUser returns the sprite here with address addr, "" if none.
func (m *Manager) addressUser(addr string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, e := range m.sprites {
		if e.rec.Address == addr {
			return name
		}
	}
	return ""
}

// atRest tells the Placement that rec went to sleep or stopped.
func (m *Manager) atRest(name string) {
	if m.opt.Placement == nil {
		return
	}
	m.spawn(func() { m.opt.Placement.AtRest(m.closing, name) })
}

// reserve asks the Placement for name before a create or fork.
func (m *Manager) reserve(ctx context.Context, name string) (func(), error) {
	if m.opt.Placement == nil {
		return func() {}, nil
	}
	release, err := m.opt.Placement.Reserve(ctx, name)
	if err != nil {
		return nil, err
	}
	return sync.OnceFunc(release), nil
}

// Fence ends a sprite's VM at once and marks it stopped, why recorded (a
// sleeping sprite, which has no VM, stays asleep): this
// host lost its claim on it (its cluster lease), so another host may wake
// its last published state and this copy must not run on.
func (m *Manager) Fence(name, why string) error {
	e, err := m.lookup(name)
	if err != nil {
		return err
	}
	return m.withOp(e, func() error {
		rec := e.rec
		kill(m.takeInstance(e))
		if rec.State == Stopped || rec.State == Sleeping {
			return nil // no VM runs; a sleeping one keeps its memory
		}
		rec.State, rec.Pid, rec.LastError = Stopped, 0, why
		return m.persist(e, rec)
	})
}

// SetPlacement puts the Manager in cluster mode: p reserves names and is
// told of sprites at rest and destroyed. Call it before Recover's sprites
// are used (before serving and before the idle loop).
func (m *Manager) SetPlacement(p Placement) { m.opt.Placement = p }

// localReleaser is a Network whose addresses are unique across hosts: a
// sprite that leaves this host keeps its address (ReleaseLocal), one
// destroyed frees it everywhere (Release).
type localReleaser interface{ ReleaseLocal(netip.Addr) }

// leaveNetwork removes the network of a sprite leaving this host; it
// keeps its address in the cluster.
func (m *Manager) leaveNetwork(rec Sprite) error {
	lr, ok := m.opt.Net.(localReleaser)
	if !ok || rec.Address == "" {
		return m.dropNetwork(rec)
	}
	err := m.opt.Net.Detach(rec.ID)
	if a, perr := netip.ParseAddr(rec.Address); perr == nil {
		lr.ReleaseLocal(a)
	}
	return err
}

// SpritesDir is the folder that holds a folder per sprite of this host,
// named by its id, made before its VM starts.
func (m *Manager) SpritesDir() string { return filepath.Join(m.opt.DataDir, "sprites") }
