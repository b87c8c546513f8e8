package sprite

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/storage"
	"github.com/wisp-sh/wisp/internal/vmm"
	"github.com/wisp-sh/wisp/internal/vmm/vmmtest"
)

// debugfsWrite writes a file into an ext4 image from the host.
func debugfsWrite(t *testing.T, img, name, content string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	os.WriteFile(src, []byte(content), 0o644)
	exec.Command("debugfs", "-w", "-R", "rm "+name, img).Run()
	if out, err := exec.Command("debugfs", "-w", "-R", "write "+src+" "+name, img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs write: %v %s", err, out)
	}
}

func debugfsRead(t *testing.T, img, name string) string {
	t.Helper()
	out, _ := exec.Command("debugfs", "-R", "cat "+name, img).Output()
	return string(out)
}

func TestCheckpointRestoreFork(t *testing.T) {
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("debugfs not installed")
	}
	frozen := 0
	d := &vmmtest.FullDriver{FreezeFunc: func(context.Context, vmm.Instance) (func() error, error) {
		frozen++
		return func() error { frozen--; return nil }, nil
	}}
	dir := t.TempDir()
	m := newManager(t, dir, &d.Driver)
	m.opt.Drivers["fake"] = d
	defer m.Close()
	ctx := context.Background()
	sp, err := m.Create(ctx, CreateOptions{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	disk := m.DiskPath(sp)
	debugfsWrite(t, disk, "before", "1")
	ck, err := m.CreateCheckpoint(ctx, "a", "first", false)
	if err != nil || ck.ID != "v1" || frozen != 0 {
		t.Fatalf("checkpoint: %+v %v (frozen %d)", ck, err, frozen)
	}
	debugfsWrite(t, disk, "after", "2")
	if ck2, err := m.CreateCheckpoint(ctx, "a", "", false); err != nil || ck2.ID != "v2" {
		t.Fatalf("second checkpoint: %+v %v", ck2, err)
	}
	if _, err := m.Restore(ctx, "a", "v9"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("restore of unknown id: %v", err)
	}
	sp, err = m.Restore(ctx, "a", "v1")
	if err != nil || sp.State != Running {
		t.Fatalf("restore: %+v %v", sp, err)
	}
	if debugfsRead(t, disk, "before") != "1" || debugfsRead(t, disk, "after") != "" {
		t.Errorf("after restore of v1: before=%q after=%q", debugfsRead(t, disk, "before"), debugfsRead(t, disk, "after"))
	}
	if l, _ := m.Checkpoints("a"); len(l) != 2 {
		t.Errorf("later checkpoints must stay: %+v", l)
	}
	// Fork from v2 diverges independently.
	f, err := m.Fork(ctx, "a", "v2", "b")
	if err != nil || f.MAC == sp.MAC || f.MachineID == sp.MachineID || f.ID == sp.ID {
		t.Fatalf("fork: %+v %v", f, err)
	}
	if debugfsRead(t, m.DiskPath(f), "after") != "2" {
		t.Error("fork from v2 lacks v2's file")
	}
	debugfsWrite(t, m.DiskPath(f), "only-b", "b")
	if debugfsRead(t, disk, "only-b") != "" {
		t.Error("a write in the fork reached the parent")
	}
	if _, err := m.Fork(ctx, "a", "", "b"); !errors.Is(err, errdefs.ErrExists) {
		t.Errorf("fork onto an existing name: %v", err)
	}
	if err := m.DeleteCheckpoint(ctx, "a", "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.checkpointDir(sp, "v1")); !os.IsNotExist(err) {
		t.Error("deleted checkpoint's folder remains")
	}
	if ck3, _ := m.CreateCheckpoint(ctx, "a", "", false); ck3.ID != "v3" {
		t.Errorf("ids must not be reused: got %s", ck3.ID)
	}
	// A folder without a record (crash mid-checkpoint) is removed on recover.
	os.MkdirAll(filepath.Join(m.checkpointsDir(sp), ".tmp-v4"), 0o700)
	os.MkdirAll(filepath.Join(m.checkpointsDir(sp), "v4"), 0o700)
	cur, _ := m.Get("a")
	m.cleanCheckpoints(cur)
	if ents, _ := os.ReadDir(m.checkpointsDir(sp)); len(ents) != 2 {
		t.Errorf("after cleaning: %d checkpoint folders, want 2 (v2, v3)", len(ents))
	}
}

func TestSleepWakeAndIdle(t *testing.T) {
	restores := 0
	var mu sync.Mutex
	d := &vmmtest.FullDriver{RestoreFunc: func(context.Context, vmm.Spec, string) (vmm.Instance, error) {
		mu.Lock()
		restores++
		mu.Unlock()
		return vmmtest.NewInstance(), nil
	}}
	m := newManager(t, t.TempDir(), &d.Driver)
	m.opt.Drivers["fake"] = d
	defer m.Close()
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "a", IdleSeconds: -1}); err != nil {
		t.Fatal(err)
	}
	sp, err := m.Sleep(ctx, "a")
	if err != nil || sp.State != Sleeping || sp.Pid != 0 {
		t.Fatalf("sleep: %+v %v", sp, err)
	}
	// Many concurrent users cause one wake. (The fake has no agent, so
	// Agent reports "not ready" after the wake; the wake count is the point.)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { m.Agent(ctx, "a") })
	}
	wg.Wait()
	if restores != 1 {
		t.Errorf("10 concurrent uses caused %d wakes, want 1", restores)
	}
	if sp, _ := m.Get("a"); sp.State != Running {
		t.Errorf("after use: %s", sp.State)
	}

	// A failed wake leaves the sprite stopped with the reason.
	m.Sleep(ctx, "a")
	d.RestoreFunc = func(context.Context, vmm.Spec, string) (vmm.Instance, error) { return nil, errors.New("state damaged") }
	m.Agent(ctx, "a")
	if sp, _ := m.Get("a"); sp.State != Stopped || sp.LastError == "" {
		t.Errorf("after failed wake: %+v", sp)
	}

	// Idle: a 1 s limit puts the sprite to sleep; "never" does not.
	d.RestoreFunc = nil
	m.Start(ctx, "a")
	m.SetIdle("a", 1)
	m.Create(ctx, CreateOptions{Name: "b", IdleSeconds: -1})
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go m.IdleLoop(lctx, 50*time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for {
		sp, _ := m.Get("a")
		if sp.State == Sleeping {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle sprite did not sleep: %s", sp.State)
		}
		time.Sleep(20 * time.Millisecond) // waiting for the idle loop
	}
	if sp, _ := m.Get("b"); sp.State != Running {
		t.Errorf("idle=never sprite is %s", sp.State)
	}
}

// TestSleepAcrossHostRestart: sleep state is synced to stable storage in
// the background; after a host restart a synced sleep wakes, and one that
// was not is refused with the reason and left stopped, startable cold.
func TestSleepAcrossHostRestart(t *testing.T) {
	d := &vmmtest.FullDriver{}
	dir := t.TempDir()
	m := newManager(t, dir, &d.Driver)
	m.opt.Drivers["fake"] = d
	m.opt.BootID = "boot-1"
	ctx := context.Background()
	for _, n := range []string{"kept", "lost"} {
		if _, err := m.Create(ctx, CreateOptions{Name: n, IdleSeconds: -1}); err != nil {
			t.Fatal(err)
		}
	}
	lost, _ := m.Get("lost")
	synced := make(chan string, 2)
	m.opt.Sync = func(dirs ...string) error {
		defer func() { synced <- dirs[0] }()
		if dirs[0] == m.dir(lost) {
			return errors.New("the host died first") // as if it never finished
		}
		return storage.SyncFiles(dirs...)
	}
	for _, n := range []string{"kept", "lost"} {
		if sp, err := m.Sleep(ctx, n); err != nil || sp.SleptBoot != "boot-1" {
			t.Fatalf("sleep %s: %+v %v", n, sp, err)
		}
	}
	<-synced
	<-synced
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if sp, _ := m.Get("kept"); sp.SleepSynced {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the synced sleep was never recorded as synced")
		}
	}
	if sp, _ := m.Get("lost"); sp.SleepSynced {
		t.Fatal("a sleep whose sync failed is recorded as synced")
	}
	m.Close()

	// The host restarted: a new boot ID.
	m2 := newManager(t, dir, &d.Driver)
	m2.opt.Drivers["fake"] = d
	m2.opt.BootID = "boot-2"
	defer m2.Close()
	if err := m2.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	var during Sprite
	d.RestoreFunc = func(context.Context, vmm.Spec, string) (vmm.Instance, error) {
		during, _ = m2.Get("kept")
		return vmmtest.NewInstance(), nil
	}
	m2.Agent(ctx, "kept") // wakes it (the fake has no agent to hand out)
	if sp, _ := m2.Get("kept"); sp.State != Running || sp.SleptBoot != "" {
		t.Errorf("synced sleep after a host restart: %+v", sp)
	}
	if during.State != Waking || during.SleepSynced {
		t.Errorf("while waking: %s, synced %v; a resumed guest's memory is not known to be on disk", during.State, during.SleepSynced)
	}
	_, _, err := m2.Agent(ctx, "lost")
	sp, _ := m2.Get("lost")
	if err == nil || !strings.Contains(err.Error(), "host restarted") || sp.State != Stopped || !strings.Contains(sp.LastError, "wisp start lost") {
		t.Errorf("unsynced sleep after a host restart: %v; %+v", err, sp)
	}
	if _, err := os.Stat(m2.sleepDir(sp)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused sleep state is still there: %v", err)
	}
	if sp, err := m2.Start(ctx, "lost"); err != nil || sp.State != Running {
		t.Errorf("cold start after a refused wake: %+v %v", sp, err)
	}
}
