package sprite

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/vmm"
	"github.com/wisp-sh/wisp/internal/vmm/vmmtest"
)

// TestUseBringsUpOnceForMany: Use wakes a sleeping sprite and boots a
// stopped one, once for 100 concurrent callers; the callers waiting for a
// boot that fails share its error instead of booting again; Agent does not
// boot a stopped sprite; Use keeps the sprite active until released.
func TestUseBringsUpOnceForMany(t *testing.T) {
	var starts, restores atomic.Int32
	var startErr atomic.Value
	up := func() (vmm.Instance, error) {
		if err, _ := startErr.Load().(error); err != nil {
			return nil, err
		}
		i := vmmtest.NewInstance()
		i.Client = &agent.Client{}
		return i, nil
	}
	d := &vmmtest.FullDriver{RestoreFunc: func(context.Context, vmm.Spec, string) (vmm.Instance, error) {
		restores.Add(1)
		return up()
	}}
	d.StartFunc = func(context.Context, vmm.Spec) (vmm.Instance, error) {
		starts.Add(1)
		return up()
	}
	m := newManager(t, t.TempDir(), &d.Driver)
	m.opt.Drivers["fake"] = d
	defer m.Close()
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "a", IdleSeconds: -1}); err != nil {
		t.Fatal(err)
	}
	many := func() (woke int, errs []error) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 100 {
			wg.Go(func() {
				rec, w, release, err := m.Use(ctx, "a")
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				defer release()
				if rec.State != Running {
					errs = append(errs, errors.New("Use returned a sprite in state "+string(rec.State)))
				}
				if w {
					woke++
				}
			})
		}
		wg.Wait()
		return woke, errs
	}

	m.Sleep(ctx, "a")
	if woke, errs := many(); len(errs) > 0 || restores.Load() != 1 || woke == 0 {
		t.Errorf("100 uses of a sleeping sprite: %d wakes, %d said woke, errors %v", restores.Load(), woke, errs)
	}
	// 20 concurrent execs (Agent) on a stopped sprite: one boot.
	m.Stop(ctx, "a")
	starts.Store(0)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 20 {
		wg.Go(func() {
			if _, release, err := m.Agent(ctx, "a"); err != nil {
				failed.Add(1)
			} else {
				release()
			}
		})
	}
	wg.Wait()
	if starts.Load() != 1 || failed.Load() != 0 {
		t.Errorf("20 execs on a stopped sprite: %d boots, %d failed; want 1 boot", starts.Load(), failed.Load())
	}
	m.Stop(ctx, "a")
	starts.Store(0)
	if woke, errs := many(); len(errs) > 0 || starts.Load() != 1 || woke == 0 {
		t.Errorf("100 uses of a stopped sprite: %d boots, %d said woke, errors %v", starts.Load(), woke, errs)
	}
	if _, woke, release, err := m.Use(ctx, "a"); err != nil || woke {
		t.Errorf("use of a running sprite: woke %v, %v", woke, err)
	} else {
		m.mu.Lock()
		active := m.sprites["a"].active
		m.mu.Unlock()
		release()
		if active != 1 {
			t.Errorf("active while used: %d", active)
		}
	}

	m.Stop(ctx, "a")
	starts.Store(0)
	startErr.Store(errors.New("boom"))
	if _, errs := many(); len(errs) != 100 || starts.Load() > 5 {
		t.Errorf("a failing boot: %d boots for 100 callers, %d errors", starts.Load(), len(errs))
	}
	m.mu.Lock()
	active := m.sprites["a"].active
	m.mu.Unlock()
	if active != 0 {
		t.Errorf("after failed uses, active = %d", active)
	}
}
