package sprite

import (
	"context"
	"fmt"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// attempt is a wake or start that failed: callers that were waiting for
// it get its error instead of trying again at once.
type attempt struct {
	at  time.Time
	err error
}

// hold marks the named sprite active (the idle loop leaves it awake) until
// release is called.
func (m *Manager) hold(name string) (*entry, func(), error) {
	e, err := m.lookup(name)
	if err != nil {
		return nil, nil, err
	}
	m.mu.Lock()
	e.active++
	m.mu.Unlock()
	release := func() {
		m.mu.Lock()
		e.active--
		e.lastActive = time.Now()
		m.mu.Unlock()
	}
	return e, release, nil
}

// ready waits until e runs with an answering agent, waking it when it
// sleeps and, with cold, booting it when it is stopped. Any number of
// concurrent callers cause one wake or start: the first does it under
// e.op, the others find it done (or share its failure). changed says
// whether the sprite was brought up (or being brought up) for this call.
func (m *Manager) ready(ctx context.Context, e *entry, cold bool) (inst vmm.Instance, changed bool, err error) {
	began := time.Now()
	for range 5 {
		m.mu.Lock()
		rec, inst := e.rec, e.inst
		m.mu.Unlock()
		switch {
		case rec.State == Running && inst != nil && inst.Agent() != nil:
			return inst, changed, nil
		case rec.State == Sleeping || (cold && rec.State == Stopped):
			changed = true
			err = m.withOp(e, func() error { return m.bringUp(ctx, e, cold, began) })
		case rec.State == Suspending || rec.State == Waking || rec.State == Restoring || rec.State == Starting || rec.State == Stopping:
			changed = true
			err = m.withOp(e, func() error { return nil }) // wait for the operation under way
		case rec.State == Running:
			err = m.withOp(e, func() error { return nil })
		default:
			err = errdefs.WithHint(stateError(string(OpUse), rec), "start it with `wisp start "+rec.Name+"`")
		}
		if err != nil {
			return nil, changed, err
		}
	}
	return nil, changed, fmt.Errorf("sprite %q did not become ready: %w", e.rec.Name, errdefs.ErrUnavailable)
}

// bringUp wakes or (with cold) starts e, under e.op, unless another caller
// did meanwhile or failed to since this caller began.
func (m *Manager) bringUp(ctx context.Context, e *entry, cold bool, began time.Time) error {
	if e.failed.err != nil && e.failed.at.After(began) {
		return e.failed.err
	}
	switch st := e.rec.State; {
	case st == Sleeping, cold && st == Stopped:
		if err := m.start(ctx, e); err != nil {
			e.failed = attempt{at: time.Now(), err: err}
			return err
		}
	}
	return nil
}

// Use makes sure the named sprite runs, for a caller that reaches it over
// its network (the URL front door): a sleeping sprite wakes and a stopped
// one boots, one wake or boot for any number of concurrent callers. It
// returns the sprite's record (its Address) and whether it was brought up
// for this call (a server in it may still be starting), and marks the
// sprite active until release is called: a connection open through it
// keeps it awake.
func (m *Manager) Use(ctx context.Context, name string) (rec Sprite, woke bool, release func(), err error) {
	e, release, err := m.hold(name)
	if err != nil {
		return Sprite{}, false, nil, err
	}
	if _, woke, err = m.ready(ctx, e, true); err != nil {
		release()
		return Sprite{}, woke, nil, err
	}
	m.mu.Lock()
	rec = e.rec
	m.mu.Unlock()
	return rec, woke, release, nil
}

// Record returns a sprite's record as stored, without the usage figures
// Get adds (disk and network counters cost system calls): for a caller on
// every request, such as the front door.
func (m *Manager) Record(name string) (Sprite, error) {
	e, err := m.lookup(name)
	if err != nil {
		return Sprite{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return e.rec, nil
}

// SetURLPublic records whether the sprite's URL answers anyone (true) or
// only requests with a credential (false, the default).
func (m *Manager) SetURLPublic(name string, public bool) (Sprite, error) {
	return m.change(name, func(e *entry) error {
		rec := e.rec
		rec.URLPublic = public
		return m.persist(e, rec)
	})
}
