package sprite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// sleepDir holds a sleeping sprite's memory and device state.
func (m *Manager) sleepDir(rec Sprite) string { return vmm.SleepDir(vmm.Spec{Dir: m.dir(rec)}) }

func (m *Manager) saver(rec Sprite) (vmm.Saver, error) {
	d, err := m.driver(rec)
	if err != nil {
		return nil, err
	}
	s, ok := d.(vmm.Saver)
	if !ok {
		return nil, fmt.Errorf("backend %s cannot save a sprite's memory: %w", rec.Backend, errdefs.ErrUnavailable)
	}
	return s, nil
}

// Sleep saves a running sprite's memory and device state to disk and ends
// its VM: the host then holds none of its memory. Sleeping a sleeping
// sprite is a no-op.
func (m *Manager) Sleep(ctx context.Context, name string) (Sprite, error) {
	return m.change(name, func(e *entry) error { return m.sleep(ctx, e) })
}

// sleep runs under e.op.
func (m *Manager) sleep(ctx context.Context, e *entry) error {
	rec := e.rec
	if err := guard(OpSleep, rec); err != nil {
		return err
	}
	if rec.State == Sleeping {
		return nil
	}
	sv, err := m.saver(rec)
	if err != nil {
		return err
	}
	dir := m.sleepDir(rec)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	rec.State, rec.SleptBoot, rec.SleepSynced = Suspending, m.opt.BootID, false
	if err := m.persist(e, rec); err != nil {
		return err
	}
	inst := m.takeInstance(e)
	t0 := time.Now()
	err = sv.Save(context.WithoutCancel(ctx), inst, dir, false, nil)
	if err != nil {
		select {
		case <-inst.Done():
			rec.State, rec.Pid, rec.LastError = Stopped, 0, "sleep failed and the VM is gone: "+err.Error()
			return errors.Join(err, m.persist(e, rec))
		default: // still running: it stays awake
			rec.State = Running
			return errors.Join(err, m.running(e, rec, inst))
		}
	}
	rec.State, rec.Pid, rec.SleptAt, rec.LastError = Sleeping, 0, time.Now().UTC(), ""
	m.log.Info("sprite asleep", LogSprite, rec.Name, "took", time.Since(t0).Round(time.Millisecond))
	if err := m.persist(e, rec); err != nil {
		return err
	}
	m.syncSleepLater(e, rec)
	m.atRest(rec.Name)
	return nil
}

// syncSleepLater writes a sleeping sprite's files (memory, device state,
// disk) to stable storage in the background, so that sleeping stays fast,
// and then records that it did. A sleep that was never synced cannot be
// trusted after a host restart: wake refuses it then. Nothing to do for a
// sleep already synced, or one from an earlier boot (its page cache is
// gone).
func (m *Manager) syncSleepLater(e *entry, rec Sprite) {
	if rec.SleepSynced || rec.SleptBoot != m.opt.BootID {
		return
	}
	dirs, slept := []string{m.dir(rec), m.sleepDir(rec)}, rec.SleptAt
	m.spawn(func() {
		select {
		case m.syncSlots <- struct{}{}:
			defer func() { <-m.syncSlots }()
		case <-m.closing.Done():
			return // the next daemon syncs it (Recover)
		}
		t0 := time.Now()
		err := m.opt.Sync(dirs...)
		if m.closing.Err() != nil {
			return
		}
		e.op.Lock()
		defer e.op.Unlock()
		rec := e.rec
		if rec.State != Sleeping || !rec.SleptAt.Equal(slept) {
			return // woken, or asleep again, meanwhile
		}
		if err == nil {
			rec.SleepSynced = true
			err = m.persist(e, rec)
		}
		if err != nil {
			m.log.Warn("sync sleeping sprite", LogSprite, rec.Name, LogErr, err)
			return
		}
		m.log.Debug("sleep state synced", LogSprite, rec.Name, "took", time.Since(t0).Round(time.Millisecond))
	})
}

// wake restores a sleeping sprite, under e.op. A wake that fails leaves the
// disk as it was and the sprite stopped, startable by a cold boot.
func (m *Manager) wake(ctx context.Context, e *entry) error {
	rec := e.rec
	if rec.State != Sleeping {
		return nil
	}
	if m.opt.Allow != nil {
		if err := m.opt.Allow(rec); err != nil {
			return err
		}
	}
	if !rec.SleepSynced && rec.SleptBoot != "" && rec.SleptBoot != m.opt.BootID {
		why := fmt.Sprintf("the host restarted before the sleeping sprite's memory was known to be on disk, so its processes cannot safely resume; its disk holds what the guest had written out: `wisp start %s` boots it cold", rec.Name)
		rec.State, rec.LastError = Stopped, why
		m.log.Error("wake refused", LogSprite, rec.Name, "reason", why)
		err := m.persist(e, rec)
		if err == nil {
			os.RemoveAll(m.sleepDir(rec)) // never to be woken now
		}
		return errors.Join(fmt.Errorf("wake %s: %s: %w", rec.Name, why, errdefs.ErrUnavailable), err)
	}
	sv, err := m.saver(rec)
	if err != nil {
		return err
	}
	// A resumed guest changes its memory file: from here the state on
	// disk is not known to be whole until the next sync.
	rec.State, rec.SleepSynced = Waking, false
	if err := m.persist(e, rec); err != nil {
		return err
	}
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.opt.BootTimeout)
	defer cancel()
	spec, err := m.spec(ctx, rec)
	var inst vmm.Instance
	if err == nil {
		inst, err = sv.Restore(ctx, spec, m.sleepDir(rec))
	}
	if err == nil {
		rec.SleptBoot, rec.SleepSynced = "", false
		err = m.running(e, rec, inst)
	}
	if err != nil {
		rec.State, rec.Pid = Stopped, 0
		rec.LastError = fmt.Sprintf("wake failed: %v; the disk is intact: `wisp start %s` boots it cold", err, rec.Name)
		m.log.Error("wake failed", LogSprite, rec.Name, LogErr, err)
		return errors.Join(fmt.Errorf("wake %s: %w", rec.Name, err), m.persist(e, rec))
	}
	os.RemoveAll(m.sleepDir(rec))
	woke := &WakeTimes{At: t0.UTC(), Total: time.Since(t0)}
	if w, ok := inst.(vmm.Woken); ok {
		woke.WakeSplit = w.Woke()
	}
	m.mu.Lock()
	e.woke = woke
	m.mu.Unlock()
	m.log.Info("sprite awake", LogSprite, rec.Name, "took", woke.Total.Round(time.Millisecond),
		"restore", woke.Restore.Round(time.Millisecond), "handshake", woke.Handshake.Round(time.Millisecond), "kept_session", woke.KeptSession)
	return nil
}

// SetIdle sets how long the sprite may sit unused before it sleeps
// (seconds; 0 the daemon's default; -1 never).
func (m *Manager) SetIdle(name string, seconds int) (Sprite, error) {
	if seconds < -1 {
		return Sprite{}, fmt.Errorf("idle %d s: %w", seconds, errdefs.ErrInvalid)
	}
	return m.change(name, func(e *entry) error {
		rec := e.rec
		rec.IdleSeconds = seconds
		return m.persist(e, rec)
	})
}

// idleLimit is how long rec may sit unused (0: forever).
func (m *Manager) idleLimit(rec Sprite) time.Duration {
	switch {
	case rec.IdleSeconds < 0:
		return 0
	case rec.IdleSeconds > 0:
		return time.Duration(rec.IdleSeconds) * time.Second
	}
	return m.opt.Idle
}

// IdleLoop puts sprites to sleep once they have been unused for their idle
// time, and keeps their console logs bounded. It returns when ctx ends.
func (m *Manager) IdleLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.boundLogs()
			for _, e := range m.idle(now) {
				m.spawn(func() {
					// Check again under the lock: a request may have come.
					err := m.withOp(e, func() error {
						if !m.isIdle(e, time.Now()) {
							return nil
						}
						if m.sessionsRun(ctx, e) {
							m.mu.Lock()
							e.lastActive = time.Now()
							m.mu.Unlock()
							return nil
						}
						return m.sleep(ctx, e)
					})
					if err != nil {
						m.log.Warn("idle sleep", LogSprite, e.rec.Name, LogErr, err)
					}
				})
			}
		}
	}
}

// sessionsRun reports whether an exec session runs in e's guest: a
// detached command keeps its sprite awake, as an attached one does (by
// its hold). A guest that does not answer in time is taken as idle.
func (m *Manager) sessionsRun(ctx context.Context, e *entry) bool {
	m.mu.Lock()
	inst := e.inst
	m.mu.Unlock()
	if inst == nil || inst.Agent() == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	all, err := inst.Agent().Sessions(ctx)
	if err != nil {
		return false
	}
	for _, s := range all {
		if s.Exit == nil {
			return true
		}
	}
	return false
}

func (m *Manager) idle(now time.Time) []*entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*entry
	for _, e := range m.sprites {
		if m.isIdleLocked(e, now) {
			out = append(out, e)
		}
	}
	return out
}

func (m *Manager) isIdle(e *entry, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.isIdleLocked(e, now)
}

func (m *Manager) isIdleLocked(e *entry, now time.Time) bool {
	limit := m.idleLimit(e.rec)
	if e.rec.State != Running || e.active > 0 || limit == 0 {
		return false
	}
	if _, err := m.saver(e.rec); err != nil {
		return false
	}
	since := e.lastActive
	if since.Before(e.rec.StartedAt) {
		since = e.rec.StartedAt
	}
	return now.Sub(since) >= limit
}
