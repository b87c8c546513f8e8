package sprite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/network"
	"github.com/wisp-sh/wisp/internal/vmm"
	"github.com/wisp-sh/wisp/internal/vmm/vmmtest"
)

// doOp does op to the named sprite through the Manager's own method.
func doOp(m *Manager, op Op, name string) error {
	ctx := context.Background()
	var err error
	switch op {
	case OpStart:
		_, err = m.Start(ctx, name)
	case OpStop:
		_, err = m.Stop(ctx, name)
	case OpDestroy:
		err = m.Destroy(ctx, name)
	case OpUse:
		var release func()
		if _, release, err = m.Agent(ctx, name); err == nil {
			release()
		}
	case OpSleep:
		_, err = m.Sleep(ctx, name)
	case OpCheckpoint:
		_, err = m.CreateCheckpoint(ctx, name, "", false)
	case OpMemoryCheckpoint:
		_, err = m.CreateCheckpoint(ctx, name, "", true)
	case OpDeleteCheckpoint:
		err = m.DeleteCheckpoint(ctx, name, "v1")
	case OpRestore:
		_, err = m.Restore(ctx, name, "v1")
	case OpFork:
		_, err = m.Fork(ctx, name, "v1", name+"-f")
	case OpSaveDisk:
		_, err = m.SaveDisk(ctx, name, filepath.Join(m.opt.DataDir, name+".saved"))
	case OpSetPolicy:
		_, err = m.SetPolicy(ctx, name, network.Policy{Mode: network.AllowAll})
	case OpEditSecrets:
		err = m.SetSecret(name, "K", []byte("v"))
	default:
		panic(op)
	}
	return err
}

// force puts the named sprite in state s, bypassing the state machine (as
// a crash may leave it), with no instance unless it runs.
func force(t *testing.T, m *Manager, name string, s State) {
	t.Helper()
	e, err := m.lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	e.rec.State = s
	if s != Running {
		e.inst = nil
	}
	rec := e.rec
	m.mu.Unlock()
	if err := m.store.Put(rec); err != nil {
		t.Fatal(err)
	}
}

// TestStateOps does every operation to a sprite in every state, through
// the Manager's methods: in a settled state (running, stopped, sleeping)
// an operation the table forbids fails with a state error and changes
// nothing, and one it allows never fails on the state; in a passing state
// (only seen after a crash, before recovery) every operation fails and
// changes nothing: with a state error, or, for the uses that wait for the
// operation under way, as not ready.
func TestStateOps(t *testing.T) {
	m := newManager(t, t.TempDir(), &vmmtest.Driver{})
	defer m.Close()
	ctx := context.Background()
	n := 0
	for _, s := range States {
		for _, op := range Ops {
			n++
			name := fmt.Sprintf("s%d", n)
			if _, err := m.Create(ctx, CreateOptions{Name: name}); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Stop(ctx, name); err != nil {
				t.Fatal(err)
			}
			if _, err := m.CreateCheckpoint(ctx, name, "", false); err != nil {
				t.Fatal(err)
			}
			if s == Running {
				if _, err := m.Start(ctx, name); err != nil {
					t.Fatal(err)
				}
			}
			force(t, m, name, s)
			err := doOp(m, op, name)
			after, gerr := m.Get(name)
			gone := errors.Is(gerr, errdefs.ErrNotFound)
			settled := slices.Contains(settled, s)
			switch {
			case Allows(s, op) && settled:
				if errors.Is(err, errdefs.ErrState) {
					t.Errorf("%s in state %s: the table allows it, but %v", op, s, err)
				}
			case settled:
				if !errors.Is(err, errdefs.ErrState) || gone || after.State != s {
					t.Errorf("%s in state %s: %v, now %s (gone %v); want a state error and no change", op, s, err, after.State, gone)
				} else if !strings.Contains(err.Error(), "in state "+string(s)) {
					t.Errorf("%s in state %s: error %q does not name the state", op, s, err)
				}
			default:
				waits := op == OpUse || op == OpMemoryCheckpoint
				if err == nil || gone || after.State != s ||
					!errors.Is(err, errdefs.ErrState) && !(waits && errors.Is(err, errdefs.ErrUnavailable)) {
					t.Errorf("%s in passing state %s: %v, now %s (gone %v); want refused and no change", op, s, err, after.State, gone)
				}
			}
		}
	}
	t.Logf("%d (state, operation) pairs", n)
}

// TestTransitionsEnforced: the one writer of records refuses a change of
// state the table does not list, and writes nothing then; every listed
// move and any write that keeps the state pass.
func TestTransitionsEnforced(t *testing.T) {
	m := newManager(t, t.TempDir(), &vmmtest.Driver{})
	defer m.Close()
	if _, err := m.Create(context.Background(), CreateOptions{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	e, _ := m.lookup("a")
	for _, from := range States {
		for _, to := range States {
			force(t, m, "a", from)
			rec := e.rec
			rec.State, rec.Origin = to, "x"
			err := m.persist(e, rec)
			ok := from == to || CanMove(from, to)
			stored, _ := m.store.List()
			switch {
			case ok && err != nil:
				t.Errorf("%s -> %s: %v", from, to, err)
			case !ok && !errors.Is(err, errdefs.ErrState):
				t.Errorf("%s -> %s is not in the table, but persist said %v", from, to, err)
			case !ok && (e.rec.State != from || stored[0].State != from):
				t.Errorf("%s -> %s refused, yet written: memory %s, store %s", from, to, e.rec.State, stored[0].State)
			}
		}
	}
	if !CanMove(Waking, Sleeping) {
		t.Error("recovery's waking -> sleeping is not in the table")
	}
}

// TestForkHoldsParentLock: a fork from a checkpoint clones and starts from
// the checkpoint's folder under its parent's lock, so a concurrent
// checkpoint delete waits for it.
func TestForkHoldsParentLock(t *testing.T) {
	var m *Manager
	var checked bool
	d := &vmmtest.Driver{StartFunc: func(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
		if spec.Name == "child" {
			e, _ := m.lookup("parent")
			if e.op.TryLock() {
				e.op.Unlock()
				t.Error("fork from a checkpoint runs without its parent's lock: a checkpoint delete may remove its folder now")
			}
			checked = true
		}
		return vmmtest.NewInstance(), nil
	}}
	m = newManager(t, t.TempDir(), d)
	defer m.Close()
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "parent"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Stop(ctx, "parent"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateCheckpoint(ctx, "parent", "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Fork(ctx, "parent", "v1", "child"); err != nil {
		t.Fatal(err)
	}
	if !checked {
		t.Fatal("the fork never started")
	}
	// A checkpoint deleted first is not forked from.
	if err := m.DeleteCheckpoint(ctx, "parent", "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Fork(ctx, "parent", "v1", "child2"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("fork from a deleted checkpoint: %v", err)
	}
	if _, err := m.Get("child2"); err == nil {
		t.Error("a failed fork left its record")
	}
}

// TestCloseWaits: Close ends and waits for the goroutines the Manager
// started (here the watchers of running instances, which keep running for
// the next daemon), and none starts after it.
func TestCloseWaits(t *testing.T) {
	m := newManager(t, t.TempDir(), &vmmtest.Driver{})
	for i := range 3 {
		if _, err := m.Create(context.Background(), CreateOptions{Name: fmt.Sprintf("w%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); watchers(m) != 3; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d watchers run, want 3: the test sees nothing", watchers(m))
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- m.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("Close did not return in a minute:\n%s", goroutines())
	}
	if n := watchers(m); n != 0 {
		t.Errorf("%d watchers outlive Close", n)
	}
	if m.spawn(func() {}) {
		t.Error("a goroutine started after Close")
	}
}

func goroutines() string {
	var b strings.Builder
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	return b.String()
}

// watchers counts the goroutines in m's watch (a goroutine dump shows
// the receiver).
func watchers(m *Manager) int {
	return strings.Count(goroutines(), fmt.Sprintf("sprite.(*Manager).watch(%p", m))
}
