package meter

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

// source is a function-field fake Source.
type source func(storage bool) []Reading

func (s source) Readings(_ context.Context, storage bool) []Reading { return s(storage) }

type sleeper struct{ slept []string }

func (s *sleeper) SleepCapped(_ context.Context, name, reason string) error {
	s.slept = append(s.slept, name+": "+reason)
	return nil
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func near(a, b, tol float64) bool    { return math.Abs(a-b) <= tol }
func open(t *testing.T, path string, c *clock) *Meter {
	t.Helper()
	m, err := Open(Options{Path: path, Interval: 10 * time.Second, StorageEvery: time.Nanosecond, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAccrual(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "usage.db")
	c := &clock{t: time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)}
	m := open(t, path, c)
	r := Reading{ID: "a1", Name: "a", State: "running", Running: true, CPUEpoch: "100@5", CPU: 2 * time.Second,
		Memory: 1 << 30, NetEpoch: "7", NetRx: 1000, NetTx: 500, Storage: 2 << 30}
	src := source(func(bool) []Reading { return []Reading{r} })
	if err := m.Tick(ctx, src, nil); err != nil {
		t.Fatal(err)
	}
	// 10 s later: 3 more CPU-seconds, 1 GiB held, 2 GiB stored.
	c.add(10 * time.Second)
	r.CPU, r.NetRx, r.NetTx = 5*time.Second, 3000, 1500
	if err := m.Tick(ctx, src, nil); err != nil {
		t.Fatal(err)
	}
	got := m.Totals()[0]
	if !near(got.CPUSeconds, 5, 1e-9) || !near(got.MemoryGiBSeconds, 10, 1e-9) || got.NetRxBytes != 3000 || got.NetTxBytes != 1500 {
		t.Fatalf("after two samples: %+v", got)
	}
	if want := 2 * 10.0 / 3600; !near(got.StorageGiBHours, want, 1e-12) {
		t.Fatalf("storage %v GiB-h, want %v", got.StorageGiBHours, want)
	}
	// Asleep for an hour: no process, so only storage accrues.
	r.Running, r.State, r.CPUEpoch, r.CPU, r.Memory, r.NetEpoch = false, "sleeping", "", 0, 0, ""
	c.add(time.Hour)
	if err := m.Tick(ctx, src, nil); err != nil {
		t.Fatal(err)
	}
	slept := m.Totals()[0]
	if slept.CPUSeconds != got.CPUSeconds || slept.MemoryGiBSeconds != got.MemoryGiBSeconds || slept.NetRxBytes != got.NetRxBytes {
		t.Fatalf("a sleeping sprite's CPU, memory or network grew: %+v -> %+v", got, slept)
	}
	if !near(slept.StorageGiBHours-got.StorageGiBHours, 2, 1e-9) {
		t.Fatalf("an hour asleep with 2 GiB: storage grew by %v GiB-h, want 2", slept.StorageGiBHours-got.StorageGiBHours)
	}
	// Woken: a new instance whose counter starts again from zero counts whole.
	r.Running, r.State, r.CPUEpoch, r.CPU, r.Memory = true, "running", "200@9", 1500*time.Millisecond, 1<<29
	c.add(10 * time.Second)
	if err := m.Tick(ctx, src, nil); err != nil {
		t.Fatal(err)
	}
	woke := m.Totals()[0]
	if !near(woke.CPUSeconds, 6.5, 1e-9) {
		t.Fatalf("after wake: %v CPU-s, want 6.5", woke.CPUSeconds)
	}
	// A kill -9 loses nothing saved: reopen and compare; then the same
	// instance goes on from where it was, not from zero.
	m.Close()
	m = open(t, path, c)
	if again := m.Totals()[0]; again != woke {
		t.Fatalf("reopened: %+v, want %+v", again, woke)
	}
	r.CPU = 2500 * time.Millisecond
	c.add(10 * time.Second)
	if err := m.Tick(ctx, src, nil); err != nil {
		t.Fatal(err)
	}
	if cpu := m.Totals()[0].CPUSeconds; !near(cpu, 7.5, 1e-9) {
		t.Fatalf("after reopen: %v CPU-s, want 7.5", cpu)
	}
	// Series and queries.
	rep, err := m.Usage(Query{Names: []string{"a"}, By: "hour"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Series) != 2 || !near(rep.Total.CPUSeconds, 7.5, 1e-9) || rep.Total.Cost <= 0 {
		t.Fatalf("usage by hour: %+v", rep)
	}
	if rep, _ := m.Usage(Query{Since: c.t.Truncate(time.Hour)}); !near(rep.Total.CPUSeconds, 2.5, 1e-9) {
		t.Fatalf("usage since this hour: %v CPU-s, want 2.5", rep.Total.CPUSeconds)
	}
	if _, err := m.Usage(Query{Names: []string{"nope"}}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("usage of an unknown sprite: %v", err)
	}
	if _, err := m.Usage(Query{By: "week"}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("by=week: %v", err)
	}
	// Destroyed: it disappears from the source and keeps its totals.
	c.add(10 * time.Second)
	if err := m.Tick(ctx, source(func(bool) []Reading { return nil }), nil); err != nil {
		t.Fatal(err)
	}
	if d := m.Totals()[0]; !d.Destroyed || !near(d.CPUSeconds, 7.5, 1e-9) {
		t.Fatalf("destroyed: %+v", d)
	}
	m.Close()
}

func TestCap(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC)}
	m := open(t, filepath.Join(t.TempDir(), "usage.db"), c)
	defer m.Close()
	if err := m.SetCap("b1", "b", api.Cap{Per: "week"}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("per=week: %v", err)
	}
	if err := m.SetCap("b1", "b", api.Cap{CPUSeconds: 5}); err != nil {
		t.Fatal(err)
	}
	r := Reading{ID: "b1", Name: "b", Running: true, CPUEpoch: "1@1", CPU: time.Second, Storage: -1}
	src := source(func(bool) []Reading { return []Reading{r} })
	s := &sleeper{}
	for _, cpu := range []time.Duration{time.Second, 3 * time.Second} {
		r.CPU = cpu
		c.add(10 * time.Second)
		if err := m.Tick(ctx, src, s); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.slept) != 0 || m.Allow("b1") != nil {
		t.Fatalf("under the cap: slept %v, allow %v", s.slept, m.Allow("b1"))
	}
	r.CPU = 6 * time.Second
	c.add(10 * time.Second)
	if err := m.Tick(ctx, src, s); err != nil {
		t.Fatal(err)
	}
	if len(s.slept) != 1 {
		t.Fatalf("at the cap: slept %v", s.slept)
	}
	err := m.Allow("b1")
	if !errors.Is(err, errdefs.ErrState) || m.Capped("b1") == "" {
		t.Fatalf("wake at the cap: %v (capped %q)", err, m.Capped("b1"))
	}
	// Only once per period, even if it keeps running.
	c.add(10 * time.Second)
	m.Tick(ctx, src, s)
	if len(s.slept) != 1 {
		t.Fatalf("slept again: %v", s.slept)
	}
	// Raised: it may run again.
	if err := m.SetCap("b1", "b", api.Cap{CPUSeconds: 60}); err != nil {
		t.Fatal(err)
	}
	if err := m.Allow("b1"); err != nil {
		t.Fatalf("after raising the cap: %v", err)
	}
	// Back down, then the day rolls over.
	m.SetCap("b1", "b", api.Cap{CPUSeconds: 1})
	if m.Allow("b1") == nil {
		t.Fatal("allowed over a lowered cap")
	}
	c.add(time.Hour)
	if err := m.Allow("b1"); err != nil {
		t.Fatalf("next day: %v", err)
	}
	// A cost cap.
	m.SetCap("b1", "b", api.Cap{Cost: 1e-9, Per: "month"})
	r.CPU = 7 * time.Second
	c.add(10 * time.Second)
	m.Tick(ctx, src, s)
	if len(s.slept) != 2 || m.Allow("b1") == nil {
		t.Fatalf("cost cap: slept %v", s.slept)
	}
}

func TestExtents(t *testing.T) {
	a := merge([]extent{{10, 20}, {0, 5}, {15, 30}, {40, 50}})
	if want := []extent{{0, 5}, {10, 30}, {40, 50}}; !equal(a, want) {
		t.Fatalf("merge: %v, want %v", a, want)
	}
	d := subtract(a, merge([]extent{{2, 12}, {25, 45}}))
	if want := []extent{{0, 2}, {12, 25}, {45, 50}}; !equal(d, want) {
		t.Fatalf("subtract: %v, want %v", d, want)
	}
	if size(d) != 2+13+5 {
		t.Fatalf("size %d", size(d))
	}
}

func equal(a, b []extent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
