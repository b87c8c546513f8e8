package sprite

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/storage"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// A checkpoint is a folder checkpoints/<id>/ in the sprite's folder holding
// disk.img and, for a memory checkpoint, state/ (the backend's files). It is
// built as checkpoints/.tmp-<id> and renamed into place, then recorded: a
// crash leaves either a whole checkpoint or a folder that Recover removes.

func (m *Manager) checkpointsDir(rec Sprite) string { return filepath.Join(m.dir(rec), "checkpoints") }

func (m *Manager) checkpointDir(rec Sprite, id string) string {
	return filepath.Join(m.checkpointsDir(rec), id)
}

func notFoundCheckpoint(name, id string) error {
	return errdefs.WithHint(fmt.Errorf("sprite %q has no checkpoint %q: %w", name, id, errdefs.ErrNotFound),
		"see `wisp checkpoint list "+name+"`")
}

// CreateCheckpoint saves the sprite's disk (and with memory its RAM and
// devices) as the next checkpoint. A running sprite is frozen (disk) or
// paused (memory) only for the moment the clones take.
func (m *Manager) CreateCheckpoint(ctx context.Context, name, comment string, memory bool) (Checkpoint, error) {
	e, err := m.lookup(name)
	if err != nil {
		return Checkpoint{}, err
	}
	if memory {
		// A sleeping sprite is woken: its memory is taken from a running VM.
		_, release, err := m.agent(ctx, name, false)
		if err != nil {
			return Checkpoint{}, err
		}
		defer release()
	}
	var ck Checkpoint
	err = m.withOp(e, func() error {
		var err error
		ck, err = m.checkpoint(ctx, e, comment, memory)
		return err
	})
	return ck, err
}

func (m *Manager) checkpoint(ctx context.Context, e *entry, comment string, memory bool) (Checkpoint, error) {
	rec := e.rec
	op := OpCheckpoint
	if memory {
		op = OpMemoryCheckpoint
	}
	if err := guard(op, rec); err != nil {
		return Checkpoint{}, err
	}
	ck := Checkpoint{ID: fmt.Sprintf("v%d", rec.NextCheckpoint+1), CreatedAt: time.Now().UTC(), Comment: comment, Memory: memory}
	tmp := filepath.Join(m.checkpointsDir(rec), ".tmp-"+ck.ID)
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return ck, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	cloneDisk := func() error { return m.opt.Clone(m.DiskPath(rec), filepath.Join(tmp, "disk.img")) }
	m.mu.Lock()
	inst := e.inst
	m.mu.Unlock()
	t0 := time.Now()
	var err error
	switch {
	case memory:
		var sv vmm.Saver
		if sv, err = m.saver(rec); err == nil {
			err = sv.Save(ctx, inst, filepath.Join(tmp, "state"), true, cloneDisk)
		}
	case rec.State == Running:
		err = m.frozen(ctx, rec, inst, cloneDisk)
	case rec.State == Sleeping:
		// The disk is not in use; the sleep state is not part of a disk
		// checkpoint.
		err = cloneDisk()
	default:
		err = cloneDisk()
	}
	if err != nil {
		return ck, noSpace(fmt.Errorf("checkpoint %s of %s: %w", ck.ID, rec.Name, err))
	}
	tDone := time.Now()
	// On stable storage before the record lists it (a gVisor memory
	// image, a QEMU device state and memory copy, the disk's clone).
	dirs := []string{tmp}
	if memory {
		dirs = append(dirs, filepath.Join(tmp, "state"))
	}
	if err := m.opt.Sync(dirs...); err != nil {
		return ck, err
	}
	if err := storage.RenameDurable(tmp, m.checkpointDir(rec, ck.ID)); err != nil {
		return ck, err
	}
	ok = true
	rec.Checkpoints = append(rec.Checkpoints, ck)
	rec.NextCheckpoint++
	if err := m.persist(e, rec); err != nil {
		os.RemoveAll(m.checkpointDir(rec, ck.ID))
		return ck, err
	}
	m.log.Info("checkpoint created", LogSprite, rec.Name, "id", ck.ID, "memory", memory, "took", time.Since(t0).Round(time.Microsecond), "recorded", time.Since(tDone).Round(time.Microsecond))
	return ck, nil
}

// frozen runs fn while the running sprite's filesystem is frozen.
func (m *Manager) frozen(ctx context.Context, rec Sprite, inst vmm.Instance, fn func() error) error {
	d, err := m.driver(rec)
	if err != nil {
		return err
	}
	fr, ok := d.(vmm.Freezer)
	if !ok {
		return fmt.Errorf("backend %s cannot freeze a running sprite: %w", rec.Backend, errdefs.ErrUnavailable)
	}
	// Flush the host's cached writes of the disk file first, while the
	// guest still runs: the clone would otherwise flush them inside the
	// frozen window.
	syncFile(m.DiskPath(rec))
	t0 := time.Now()
	thaw, err := fr.Freeze(ctx, inst)
	if err != nil {
		return fmt.Errorf("freeze: %w", err)
	}
	t1 := time.Now()
	err = fn()
	t2 := time.Now()
	err = errors.Join(err, thaw())
	m.log.Debug("frozen", LogSprite, rec.Name, "freeze", t1.Sub(t0), "clone", t2.Sub(t1), "thaw", time.Since(t2))
	return err
}

// syncFile writes a file's cached data to its filesystem (best effort).
func syncFile(path string) {
	if f, err := os.OpenFile(path, os.O_RDWR, 0); err == nil {
		f.Sync()
		f.Close()
	}
}

// Checkpoints lists a sprite's checkpoints with the space each holds.
func (m *Manager) Checkpoints(name string) ([]Checkpoint, error) {
	sp, err := m.Get(name)
	if err != nil {
		return nil, err
	}
	out := make([]Checkpoint, len(sp.Checkpoints))
	for i, c := range sp.Checkpoints {
		c.SizeBytes = dirUsage(m.checkpointDir(sp, c.ID))
		out[i] = c
	}
	return out, nil
}

// GetCheckpoint returns one checkpoint.
func (m *Manager) GetCheckpoint(name, id string) (Checkpoint, error) {
	list, err := m.Checkpoints(name)
	if err != nil {
		return Checkpoint{}, err
	}
	for _, c := range list {
		if c.ID == id {
			return c, nil
		}
	}
	return Checkpoint{}, notFoundCheckpoint(name, id)
}

func dirUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			u, _ := storage.Usage(p)
			n += u
		}
		return nil
	})
	return n
}

// DeleteCheckpoint removes a checkpoint and gives its space back.
func (m *Manager) DeleteCheckpoint(ctx context.Context, name, id string) error {
	e, err := m.lookup(name)
	if err != nil {
		return err
	}
	return m.withOp(e, func() error {
		rec := e.rec
		if _, ok := rec.checkpoint(id); !ok {
			return notFoundCheckpoint(name, id)
		}
		if err := guard(OpDeleteCheckpoint, rec); err != nil {
			return err
		}
		kept := rec.Checkpoints[:0:0]
		for _, c := range rec.Checkpoints {
			if c.ID != id {
				kept = append(kept, c)
			}
		}
		rec.Checkpoints = kept
		// Record first: a crash then leaves an orphan folder Recover removes.
		if err := m.persist(e, rec); err != nil {
			return err
		}
		return os.RemoveAll(m.checkpointDir(rec, id))
	})
}

// Restore puts the sprite back to checkpoint id: its disk becomes the
// checkpoint's and, for a memory checkpoint, so do its RAM and processes.
// Later checkpoints stay. The sprite runs afterwards.
func (m *Manager) Restore(ctx context.Context, name, id string) (Sprite, error) {
	return m.change(name, func(e *entry) error {
		rec := e.rec
		ck, ok := rec.checkpoint(id)
		if !ok {
			return notFoundCheckpoint(name, id)
		}
		if err := guard(OpRestore, rec); err != nil {
			return err
		}
		rec.State = Restoring
		if err := m.persist(e, rec); err != nil {
			return err
		}
		inst := m.takeInstance(e)
		kill(inst)
		os.RemoveAll(m.sleepDir(rec))
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.opt.BootTimeout)
		defer cancel()
		inst, err := m.fromCheckpoint(ctx, rec, rec, ck)
		if err == nil {
			err = m.running(e, rec, inst)
		}
		if err != nil {
			rec.State, rec.Pid, rec.LastError = Stopped, 0, "restore of "+id+" failed: "+err.Error()
			return errors.Join(noSpace(err), m.persist(e, rec))
		}
		m.afterBoot(ctx, e, !ck.Memory)
		m.log.Info("sprite restored", LogSprite, name, "checkpoint", id, "memory", ck.Memory)
		return nil
	})
}

// fromCheckpoint makes dst's disk a clone of src's checkpoint ck (the
// replacement is one rename) and starts dst from it: restored from the
// memory state, or booted.
func (m *Manager) fromCheckpoint(ctx context.Context, src, dst Sprite, ck Checkpoint) (vmm.Instance, error) {
	ckDir := m.checkpointDir(src, ck.ID)
	next := m.DiskPath(dst) + ".next"
	os.Remove(next)
	if err := m.opt.Clone(filepath.Join(ckDir, "disk.img"), next); err != nil {
		return nil, err
	}
	if err := os.Rename(next, m.DiskPath(dst)); err != nil {
		return nil, err
	}
	spec, err := m.spec(ctx, dst)
	if err != nil {
		return nil, err
	}
	if !ck.Memory {
		d, err := m.driver(dst)
		if err != nil {
			return nil, err
		}
		return d.Start(ctx, spec)
	}
	sv, err := m.saver(dst)
	if err != nil {
		return nil, err
	}
	return sv.Restore(ctx, spec, filepath.Join(ckDir, "state"))
}

// Fork makes newName, an independent sprite, from name's current disk or
// from its checkpoint from, with an identity of its own (hostname,
// machine-id, MAC, fresh randomness).
func (m *Manager) Fork(ctx context.Context, name, from, newName string) (Sprite, error) {
	if err := ValidateName(newName); err != nil {
		return Sprite{}, err
	}
	e, err := m.lookup(name)
	if err != nil {
		return Sprite{}, err
	}
	m.mu.Lock()
	src := e.rec
	m.mu.Unlock()
	if err := guard(OpFork, src); err != nil {
		return Sprite{}, err
	}
	var ck Checkpoint
	if from != "" {
		var ok bool
		if ck, ok = src.checkpoint(from); !ok {
			return Sprite{}, notFoundCheckpoint(name, from)
		}
	}
	rec := src
	rec.ID, rec.Name, rec.State, rec.MAC, rec.MachineID = randHex(5), newName, Creating, newMAC(), randHex(16)
	rec.CreatedAt, rec.Pid, rec.LastError, rec.Checkpoints, rec.NextCheckpoint = time.Now().UTC(), 0, "", nil, 0
	rec.StartedAt, rec.SleptAt, rec.Origin = time.Time{}, time.Time{}, "fork of "+name
	rec.SleptBoot, rec.SleepSynced = "", false
	rec.URLPublic = false // a fork's URL is private until said otherwise

	if err := m.checkSpace(rec); err != nil {
		return Sprite{}, err
	}
	unreserve, err := m.reserve(ctx, newName)
	if err != nil {
		return Sprite{}, err
	}
	uidDone, err := m.allocUID(&rec)
	if err != nil {
		unreserve()
		return Sprite{}, err
	}
	defer uidDone()
	rec.Address = "" // a fork has an address of its own, and its parent's policy
	if src.Address != "" {
		if err := m.allocAddress(&rec); err != nil {
			unreserve()
			return Sprite{}, err
		}
	}
	if err := m.store.Insert(rec); err != nil {
		m.dropNetwork(rec)
		unreserve()
		return Sprite{}, errdefs.WithHint(err, "choose another name for the fork")
	}
	ne := &entry{rec: rec}
	ne.op.Lock()
	defer ne.op.Unlock()
	m.mu.Lock()
	m.sprites[newName] = ne
	m.mu.Unlock()
	uidDone()

	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.opt.BootTimeout)
	defer cancel()
	var undo undoStack
	undo.push("record", func() error {
		m.mu.Lock()
		delete(m.sprites, newName)
		m.mu.Unlock()
		return m.store.Delete(newName)
	})
	undo.push("network", func() error { return m.dropNetwork(rec) })
	undo.push("reservation", func() error { unreserve(); return nil })
	fail := func(err error) (Sprite, error) { return Sprite{}, errors.Join(noSpace(err), undo.run()) }
	if err := os.MkdirAll(m.dir(rec), 0o700); err != nil {
		return fail(err)
	}
	undo.push("folder", func() error { m.removeLogs(rec); return os.RemoveAll(m.dir(rec)) })
	var inst vmm.Instance
	if from != "" {
		// Under the parent's lock: a checkpoint delete must not remove
		// the folder the fork clones and restores from.
		err = m.withOp(e, func() error {
			src := e.rec
			if err := guard(OpFork, src); err != nil {
				return err
			}
			if _, ok := src.checkpoint(from); !ok {
				return notFoundCheckpoint(name, from)
			}
			var err error
			inst, err = m.fromCheckpoint(ctx, src, rec, ck)
			return err
		})
	} else {
		err = m.withOp(e, func() error { return m.cloneCurrent(ctx, e, m.DiskPath(rec)) })
		if err == nil {
			inst, err = m.boot(ctx, rec)
		}
	}
	if err != nil {
		return fail(err)
	}
	undo.push("instance", func() error { kill(inst); return nil })
	if ck.Memory {
		// The memory came from the parent: make the fork its own.
		seed := make([]byte, 64)
		rand.Read(seed)
		if err := inst.Agent().SetIdentity(ctx, m.identity(rec, seed)); err != nil {
			return fail(fmt.Errorf("fork identity: %w", err))
		}
	}
	if err := m.running(ne, rec, inst); err != nil {
		return fail(err)
	}
	m.afterBoot(ctx, ne, !ck.Memory)
	m.log.Info("sprite forked", LogSprite, newName, "from", name, "checkpoint", from)
	return m.Get(newName)
}

// cloneCurrent clones e's disk as it is now to dst (frozen if running).
func (m *Manager) cloneCurrent(ctx context.Context, e *entry, dst string) error {
	rec := e.rec
	clone := func() error { return m.opt.Clone(m.DiskPath(rec), dst) }
	switch rec.State {
	case Running:
		m.mu.Lock()
		inst := e.inst
		m.mu.Unlock()
		return m.frozen(ctx, rec, inst, clone)
	case Stopped, Sleeping:
		return clone()
	}
	return stateError("fork", rec)
}

// cleanCheckpoints removes checkpoint folders the record does not list
// (a crash between building and recording one).
func (m *Manager) cleanCheckpoints(rec Sprite) {
	ents, _ := os.ReadDir(m.checkpointsDir(rec))
	for _, d := range ents {
		if _, ok := rec.checkpoint(d.Name()); !ok || strings.HasPrefix(d.Name(), ".tmp-") {
			m.log.Info("removing unrecorded checkpoint folder", LogSprite, rec.Name, "folder", d.Name())
			os.RemoveAll(filepath.Join(m.checkpointsDir(rec), d.Name()))
		}
	}
}
