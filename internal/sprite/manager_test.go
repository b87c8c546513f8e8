package sprite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/vmm"
	"github.com/wisp-sh/wisp/internal/vmm/vmmtest"
)

type fakeImages struct{ root string }

func (f fakeImages) Root(name string) (string, error) {
	if name != "minimal" {
		return "", errdefs.ErrInvalid
	}
	return f.root, nil
}
func (f fakeImages) Boot(context.Context) (string, string, error) { return "/k", "/i", nil }

func newManager(t *testing.T, dir string, d *vmmtest.Driver, set ...func(*Options)) *Manager {
	t.Helper()
	img := filepath.Join(t.TempDir(), "root.ext4")
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed (make deps)")
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	opt := Options{
		DataDir: dir, Backend: "fake", Drivers: map[string]vmm.Driver{"fake": d}, Images: fakeImages{img},
		Defaults: CreateOptions{CPUs: 1, MemoryMiB: 256, DiskGiB: 1, Image: "minimal"},
		Limits:   Limits{MaxCPUs: 4, MaxMemoryMiB: 4096, MaxDiskGiB: 100},
	}
	for _, f := range set {
		f(&opt)
	}
	m, err := NewManager(slog.New(slog.DiscardHandler), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Log folders are tmpfs mounts (as root) and outlive the manager.
		ents, _ := os.ReadDir(filepath.Join(dir, "logs"))
		for _, d := range ents {
			vmm.RemoveLogDir(filepath.Join(dir, "logs", d.Name()))
		}
	})
	return m
}

func TestCreateBadInputChangesNothing(t *testing.T) {
	dir := t.TempDir()
	m := newManager(t, dir, &vmmtest.Driver{})
	defer m.Close()
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "ok"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		o    CreateOptions
		kind error
	}{
		{CreateOptions{Name: "ok"}, errdefs.ErrExists},
		{CreateOptions{Name: "Bad_Name"}, errdefs.ErrInvalid},
		{CreateOptions{Name: ""}, errdefs.ErrInvalid},
		{CreateOptions{Name: "big", CPUs: 1000}, errdefs.ErrInvalid},
		{CreateOptions{Name: "big", MemoryMiB: 1 << 30}, errdefs.ErrInvalid},
		{CreateOptions{Name: "big", DiskGiB: 1 << 20}, errdefs.ErrInvalid},
		{CreateOptions{Name: "img", Image: "nope"}, errdefs.ErrInvalid},
		{CreateOptions{Name: "be", Backend: "nope"}, errdefs.ErrInvalid},
		{CreateOptions{Name: "few", Pids: 2}, errdefs.ErrInvalid},
		{CreateOptions{Name: "many", Pids: MaxPids + 1}, errdefs.ErrInvalid},
	} {
		if _, err := m.Create(ctx, tc.o); !errors.Is(err, tc.kind) {
			t.Errorf("Create(%+v) = %v, want %v", tc.o, err, tc.kind)
		}
	}
	if l := m.List(); len(l) != 1 || l[0].Name != "ok" {
		t.Errorf("after bad input, sprites = %+v", l)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "sprites"))
	if len(ents) != 1 {
		t.Errorf("after bad input, %d sprite folders", len(ents))
	}
}

// TestPidsLimit: a sprite's process limit is stored in its record (the
// default when create does not say) and reaches the driver at every start.
func TestPidsLimit(t *testing.T) {
	var got []int
	d := &vmmtest.Driver{StartFunc: func(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
		got = append(got, spec.Pids)
		return vmmtest.NewInstance(), nil
	}}
	m := newManager(t, t.TempDir(), d)
	defer m.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		pids, want int
	}{{0, vmm.DefaultPids}, {64, 64}} {
		sp, err := m.Create(ctx, CreateOptions{Name: fmt.Sprintf("p%d", tc.pids), Pids: tc.pids})
		if err != nil {
			t.Fatal(err)
		}
		if sp.Pids != tc.want || got[len(got)-1] != tc.want {
			t.Errorf("create with pids %d: record %d, driver %d, want %d", tc.pids, sp.Pids, got[len(got)-1], tc.want)
		}
		if _, err := m.Stop(ctx, sp.Name); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Start(ctx, sp.Name); err != nil {
			t.Fatal(err)
		}
		if got[len(got)-1] != tc.want {
			t.Errorf("restart: driver got pids %d, want %d", got[len(got)-1], tc.want)
		}
	}
}

func TestCreateBootFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	m := newManager(t, dir, &vmmtest.Driver{StartFunc: func(context.Context, vmm.Spec) (vmm.Instance, error) {
		return nil, errors.New("boom")
	}})
	defer m.Close()
	if _, err := m.Create(context.Background(), CreateOptions{Name: "x"}); err == nil {
		t.Fatal("create succeeded")
	}
	if _, err := m.Get("x"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get after failed create: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "sprites"))
	if len(ents) != 0 {
		t.Errorf("failed create left %d folders", len(ents))
	}
	recs, _ := m.store.List()
	if len(recs) != 0 {
		t.Errorf("failed create left records %+v", recs)
	}
}

func TestLifecycleGuards(t *testing.T) {
	var starts atomic.Int32
	m := newManager(t, t.TempDir(), &vmmtest.Driver{StartFunc: func(context.Context, vmm.Spec) (vmm.Instance, error) {
		starts.Add(1)
		i := vmmtest.NewInstance()
		i.Client = &agent.Client{}
		return i, nil
	}})
	defer m.Close()
	ctx := context.Background()
	sp, err := m.Create(ctx, CreateOptions{Name: "a"})
	if err != nil || sp.State != Running {
		t.Fatalf("create: %+v %v", sp, err)
	}
	for range 2 { // stop is idempotent
		if sp, err = m.Stop(ctx, "a"); err != nil || sp.State != Stopped {
			t.Fatalf("stop: %+v %v", sp, err)
		}
	}
	// Any use starts a stopped sprite; stop ends it again.
	booted := starts.Load()
	if _, release, err := m.Agent(ctx, "a"); err != nil {
		t.Errorf("Agent of a stopped sprite: %v, want it started", err)
	} else {
		release()
	}
	if sp, _ := m.Get("a"); sp.State != Running || starts.Load() != booted+1 {
		t.Errorf("after a use of a stopped sprite: state %s, %d boots", sp.State, starts.Load()-booted)
	}
	if _, err := m.CreateCheckpoint(ctx, "a", "", true); err == nil {
		t.Errorf("memory checkpoint with a fake backend that cannot save succeeded")
	}
	if sp, err = m.Stop(ctx, "a"); err != nil || sp.State != Stopped {
		t.Fatalf("stop: %+v %v", sp, err)
	}
	if _, err := m.CreateCheckpoint(ctx, "a", "", true); !errors.Is(err, errdefs.ErrState) {
		t.Errorf("memory checkpoint of a stopped sprite: %v, want a state error (it is not started for one)", err)
	}
	for range 2 { // start is idempotent
		if sp, err = m.Start(ctx, "a"); err != nil || sp.State != Running {
			t.Fatalf("start: %+v %v", sp, err)
		}
	}
	if err := m.Destroy(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Stop(ctx, "a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("stop after destroy: %v", err)
	}
	if !CanMove(Running, Stopping) || CanMove(Stopped, Stopping) || CanMove(Destroying, Running) {
		t.Error("transition table")
	}
}

func TestUnexpectedExitMarksStopped(t *testing.T) {
	inst := vmmtest.NewInstance()
	m := newManager(t, t.TempDir(), &vmmtest.Driver{StartFunc: func(context.Context, vmm.Spec) (vmm.Instance, error) { return inst, nil }})
	defer m.Close()
	if _, err := m.Create(context.Background(), CreateOptions{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	inst.Exit()
	deadline := time.Now().Add(5 * time.Second)
	for {
		sp, _ := m.Get("a")
		if sp.State == Stopped && sp.LastError != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sprite not marked stopped: %+v", sp)
		}
		time.Sleep(5 * time.Millisecond) // waiting for the watcher goroutine
	}
}

func TestRecover(t *testing.T) {
	dir := t.TempDir()
	m := newManager(t, dir, &vmmtest.Driver{})
	ctx := context.Background()
	for _, n := range []string{"alive", "dead", "half", "going", "hung"} {
		if _, err := m.Create(ctx, CreateOptions{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	// Simulate a daemon killed mid-create and mid-destroy.
	for n, st := range map[string]State{"half": Creating, "going": Destroying} {
		rec, _ := m.Get(n)
		rec.State = st
		m.store.Put(rec)
	}
	m.store.Close()

	adopted := vmmtest.NewInstance()
	var reaped []string
	m2 := newManager(t, dir, &vmmtest.Driver{
		AdoptFunc: func(_ context.Context, s vmm.Spec) (vmm.Instance, error) {
			switch s.Name {
			case "alive":
				return adopted, nil
			case "hung": // runs, but its agent does not answer
				return nil, errors.New("agent did not answer")
			}
			return nil, vmm.ErrNotRunning
		},
		ReapFunc: func(_ context.Context, s vmm.Spec) error {
			reaped = append(reaped, s.Name) // Recover adopts concurrently; only "hung" gets here
			return nil
		},
	})
	defer m2.Close()
	if err := m2.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string]State{}
	for _, s := range m2.List() {
		got[s.Name] = s.State
	}
	want := map[string]State{"alive": Running, "dead": Stopped, "hung": Stopped}
	if !maps.Equal(got, want) {
		t.Errorf("after recover: %v, want %v", got, want)
	}
	if !slices.Equal(reaped, []string{"hung"}) {
		t.Errorf("reaped %v, want the one that ran unanswering: [hung]", reaped)
	}
	if s, _ := m2.Get("hung"); !strings.Contains(s.LastError, "could not reach the VM") {
		t.Errorf("hung sprite's reason: %q", s.LastError)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "sprites"))
	if len(ents) != 3 {
		t.Errorf("after recover, %d folders, want 3", len(ents))
	}
}

// TestLogsBounded: a sprite's console log lives in a folder of its own
// that (as root) is a tmpfs refusing writes past vmm.LogFSSize; the daemon
// cuts a log grown past maxLog to its tail; destroy removes the folder.
func TestLogsBounded(t *testing.T) {
	m := newManager(t, t.TempDir(), &vmmtest.Driver{})
	defer m.Close()
	ctx := context.Background()
	sp, err := m.Create(ctx, CreateOptions{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		f, err := os.OpenFile(m.ConsolePath(sp), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		chunk := make([]byte, 64<<10)
		var n int64
		for n < 4*vmm.LogFSSize {
			k, err := f.Write(chunk)
			n += int64(k)
			if err != nil {
				break
			}
		}
		f.Close()
		if n > vmm.LogFSSize {
			t.Errorf("wrote %d bytes into a log bounded at %d", n, vmm.LogFSSize)
		}
		os.Remove(m.ConsolePath(sp))
	}

	big := make([]byte, maxLog+100)
	for i := range big {
		big[i] = 'x'
	}
	copy(big[len(big)-4:], "END\n")
	os.WriteFile(m.ConsolePath(sp), big, 0o644)
	m.boundLogs()
	got, _ := os.ReadFile(m.ConsolePath(sp))
	if len(got) > keepLog+200 || !strings.HasSuffix(string(got), "END\n") || !strings.HasPrefix(string(got), "[wisp: console.log was") {
		t.Errorf("bounded log: %d bytes, head %q", len(got), got[:min(60, len(got))])
	}

	if err := m.Destroy(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.logDir(sp)); !os.IsNotExist(err) {
		t.Errorf("log folder after destroy: %v", err)
	}
}
