package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/image/imagetest"
	"github.com/wisp-sh/wisp/internal/storage"
	"github.com/wisp-sh/wisp/internal/vmm"
	"github.com/wisp-sh/wisp/internal/vmm/conformance"
)

func TestArgv(t *testing.T) {
	spec := vmm.Spec{ID: "abc", Name: "dev", Dir: "/d", CPUs: 2, MemoryMiB: 512, Disk: "/d/disk", Kernel: "/k", Initrd: "/i", MAC: "52:54:00:00:00:01"}
	d := &Driver{Accel: "tcg", Sandbox: true, TSCKHz: 2100000, RunAs: "nobody"}
	a := strings.Join(d.Argv(spec), " ")
	for _, want := range []string{
		"-M microvm,accel=tcg,memory-backend=mem",
		"memory-backend-file,id=mem,size=512M,mem-path=/d/memory,share=on",
		"-smp 2", "wisp_name=dev", "virtserialport,chardev=agent,name=wisp.agent",
		"-sandbox on,obsolete=deny,elevateprivileges=allow,spawn=deny", "tsc_early_khz=2100000", "-runas nobody", "mac=52:54:00:00:00:01", "-pidfile /d/qemu.pid", "auto-read-only=off",
	} {
		if !strings.Contains(a, want) {
			t.Errorf("argv lacks %q:\n%s", want, a)
		}
	}
	if strings.Contains(a, "-cpu host") {
		t.Error("tcg argv asks for -cpu host")
	}
	kvm := strings.Join((&Driver{Accel: "kvm", Sandbox: true, TSCKHz: 2100000}).Argv(spec), " ")
	if !strings.Contains(kvm, "-cpu host") || strings.Contains(kvm, "tsc_early_khz") || !strings.Contains(kvm, "elevateprivileges=deny") {
		t.Errorf("kvm argv: %s", kvm)
	}
	named := strings.Join((&Driver{Accel: "kvm", CPUModel: "Skylake-Server-v4"}).Argv(spec), " ")
	if !strings.Contains(named, "-cpu Skylake-Server-v4,enforce") || strings.Contains(named, "-cpu host") {
		t.Errorf("kvm argv with a named model: %s", named)
	}
	if tcg := strings.Join((&Driver{Accel: "tcg", CPUModel: "Skylake-Server-v4"}).Argv(spec), " "); !strings.Contains(tcg, "-cpu max") {
		t.Errorf("tcg argv with a named model (TCG's max is the same on every host of a QEMU version): %s", tcg)
	}
}

// fixture returns a driver and a maker of fresh specs (own folder, own
// disk made from the test image); it skips without QEMU.
func fixture(tb testing.TB) (*Driver, func(tb testing.TB, name string, memMiB int) vmm.Spec) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		tb.Skip("qemu-system-x86_64 not installed (run `make deps`)")
	}
	fx := imagetest.Need(tb)
	d := New(slog.New(slog.NewTextHandler(os.Stderr, nil)), Detect("qemu-system-x86_64"), "nobody")
	n := 0
	return d, func(tb testing.TB, name string, memMiB int) vmm.Spec {
		n++
		dir, err := os.MkdirTemp("", "wq")
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { os.RemoveAll(dir) })
		disk := filepath.Join(dir, "disk.img")
		if err := storage.CreateDisk(context.Background(), fx.Root, disk, 1); err != nil {
			tb.Fatal(err)
		}
		return vmm.Spec{ID: fmt.Sprintf("t%d%d", os.Getpid(), n), Name: name, Dir: dir, CPUs: 1, MemoryMiB: memMiB,
			Disk: disk, DiskGiB: 1, Kernel: fx.Kernel.Vmlinux, Initrd: fx.Initrd, MAC: fmt.Sprintf("52:54:00:12:34:%02x", n),
			UID: 1879100000 + (os.Getpid()%1000)*100 + n} // jailed, as wispd runs them
	}
}

func TestConformance(t *testing.T) {
	d, newSpec := fixture(t)
	conformance.Run(t, conformance.Fixture{
		Driver:  d,
		NewSpec: func(t *testing.T, name string) vmm.Spec { return newSpec(t, name, 256) },
	})
}

func sh(tb testing.TB, ag *agent.Client, script string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	exit, err := ag.Exec(ctx, proto.ExecRequest{Argv: []string{"sh", "-c", script}}, agent.ExecIO{Stdout: &out, Stderr: &out})
	if err != nil || exit.Code != 0 {
		tb.Fatalf("%s: %v %+v %s", script, err, exit, out.String())
	}
	return out.String()
}

// TestCheckpoint: a state saved outside the sprite's folder carries its
// own memory copy, and restores more than once (dir is only read).
func TestCheckpoint(t *testing.T) {
	d, newSpec := fixture(t)
	spec := newSpec(t, "ckpt", 256)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })
	sh(t, inst.Agent(), "echo one > $HOME/ck; echo one > /dev/shm/ck")
	snap := filepath.Join(t.TempDir(), "snap")
	// A failed save commits nothing and leaves the instance running.
	if err := d.Save(ctx, inst, snap, false, func() error { return errors.New("no room") }); err == nil || !strings.Contains(err.Error(), "no room") {
		t.Fatalf("Save with a failing during: %v", err)
	}
	if _, err := readState(snap); err == nil {
		t.Error("a failed save left a state")
	}
	sh(t, inst.Agent(), "true")
	disk := filepath.Join(t.TempDir(), "disk")
	if err := d.Save(ctx, inst, snap, true, func() error { return d.clone(spec.Disk, disk, true) }); err != nil {
		t.Fatal(err)
	}
	if st, err := readState(snap); err != nil || st.Memory != memFile {
		t.Fatalf("state %+v %v, want a memory copy", st, err)
	}
	sh(t, inst.Agent(), "echo two > $HOME/ck; echo two > /dev/shm/ck; sync")
	inst.Kill()
	<-inst.Done()
	for range 2 {
		if err := d.clone(disk, spec.Disk, false); err != nil {
			t.Fatal(err)
		}
		woke, err := d.Restore(ctx, spec, snap)
		if err != nil {
			t.Fatal(err)
		}
		if got := sh(t, woke.Agent(), "cat $HOME/ck /dev/shm/ck; echo three > /dev/shm/ck"); got != "one\none\n" {
			t.Errorf("restored checkpoint reads %q, want one one", got)
		}
		woke.Close() // a restored instance is adopted like a started one
		again, err := d.Adopt(ctx, spec)
		if err != nil {
			t.Fatalf("Adopt after Restore: %v", err)
		}
		again.Kill()
		<-again.Done()
	}
}

// TestAdoptPaused: a daemon that died in the middle of a save left the VM
// paused; adopting it resumes it.
func TestAdoptPaused(t *testing.T) {
	d, newSpec := fixture(t)
	spec := newSpec(t, "paused", 256)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })
	if err := inst.(*Instance).qmp("stop"); err != nil {
		t.Fatal(err)
	}
	inst.Close()
	again, err := d.Adopt(ctx, spec)
	if err != nil {
		t.Fatalf("Adopt of a paused VM: %v", err)
	}
	defer again.Close()
	if got := sh(t, again.Agent(), "echo resumed"); got != "resumed\n" {
		t.Errorf("after adopt: %q", got)
	}
}

// BenchmarkSaveRestore reports medians of sleep (Save without keep), wake
// (Restore until the agent answers) and the pause of a checkpoint (Save
// with keep into a folder elsewhere: device state plus a memory copy).
// go test ./internal/vmm/qemu -run '^$' -bench SaveRestore -benchtime 5x
func BenchmarkSaveRestore(b *testing.B) {
	d, newSpec := fixture(b)
	d.Log = slog.New(slog.DiscardHandler)
	for _, mem := range []int{256, 1024} {
		b.Run(fmt.Sprintf("%dMiB", mem), func(b *testing.B) {
			spec := newSpec(b, "bench", mem)
			ctx := context.Background()
			vi, err := d.Start(ctx, spec)
			if err != nil {
				b.Fatal(err)
			}
			inst := vi.(*Instance)
			defer func() { inst.Kill(); <-inst.Done() }()
			sh(b, inst.Agent(), "head -c 100000000 /dev/urandom > /dev/shm/fill") // some touched RAM
			var sleep, wake, ckpt []time.Duration
			for i := 0; b.Loop(); i++ {
				snap := filepath.Join(b.TempDir(), "snap")
				t0 := time.Now()
				if err := d.Save(ctx, inst, snap, true, nil); err != nil {
					b.Fatal(err)
				}
				ckpt = append(ckpt, time.Since(t0))
				t0 = time.Now()
				if err := d.Save(ctx, inst, filepath.Join(spec.Dir, "sleep"), false, nil); err != nil {
					b.Fatal(err)
				}
				sleep = append(sleep, time.Since(t0))
				t0 = time.Now()
				vi, err := d.Restore(ctx, spec, filepath.Join(spec.Dir, "sleep"))
				if err != nil {
					b.Fatal(err)
				}
				wake = append(wake, time.Since(t0))
				inst = vi.(*Instance)
				os.RemoveAll(snap)
			}
			median := func(ds []time.Duration) float64 {
				slices.Sort(ds)
				return float64(ds[len(ds)/2].Microseconds()) / 1000
			}
			b.ReportMetric(median(sleep), "sleep-ms")
			b.ReportMetric(median(wake), "wake-ms")
			b.ReportMetric(median(ckpt), "checkpoint-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// TestKeptSession: a sleep keeps the host's agent session and the wake
// goes on with it over the new QEMU, with no new handshake: the same
// client, and a process from before the sleep still running. A wake by
// another driver (a daemon restart) makes a new session; so does a kept
// session that does not answer.
func TestKeptSession(t *testing.T) {
	d, newSpec := fixture(t)
	spec := newSpec(t, "kept", 256)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	first, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	inst := first
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })
	sh(t, inst.Agent(), "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /dev/shm/tick; sleep 0.05; done' </dev/null >/dev/null 2>&1 &")
	ticking := func(ag *agent.Client) {
		t.Helper()
		a := sh(t, ag, "cat /dev/shm/tick")
		deadline := time.Now().Add(time.Minute)
		for sh(t, ag, "cat /dev/shm/tick") == a {
			if time.Now().After(deadline) {
				t.Fatalf("the process from before the sleep is stuck at %q", a)
			}
			time.Sleep(20 * time.Millisecond) // it ticks every 50 ms
		}
	}
	ag := inst.Agent()
	sleep := vmm.SleepDir(spec)
	// wake sleeps the sprite with saver and wakes it with d.
	wake := func(saver, d *Driver) (vmm.Instance, vmm.WakeSplit) {
		t.Helper()
		if err := saver.Save(ctx, inst, sleep, false, nil); err != nil {
			t.Fatalf("Save: %v", err)
		}
		woke, err := d.Restore(ctx, spec, sleep)
		if err != nil {
			t.Fatalf("Restore: %v", err)
		}
		inst = woke
		w := woke.(vmm.Woken).Woke()
		if w.Restore <= 0 || w.Handshake <= 0 {
			t.Errorf("wake split %+v", w)
		}
		t.Logf("wake: restore %v, handshake %v, kept %v", w.Restore, w.Handshake, w.KeptSession)
		return woke, w
	}
	for range 2 {
		woke, w := wake(d, d)
		if !w.KeptSession || woke.Agent() != ag {
			t.Fatalf("session not kept: %+v", w)
		}
		ticking(ag)
	}

	// Another driver (a daemon restart) has no session of this sprite's:
	// a new handshake.
	d2 := New(d.Log, Detect(d.Binary), "nobody")
	woke, w := wake(d, d2)
	if w.KeptSession || woke.Agent() == ag {
		t.Fatalf("a session kept by another driver: %+v", w)
	}
	ticking(woke.Agent())
	select {
	case <-ag.Closed():
		t.Fatal("the first driver's parked session closed before its sprite woke elsewhere")
	default:
	}
	d.dropKept(spec)
	<-ag.Closed()

	// A kept session that does not answer (here: closed) is let go, and
	// the wake falls back to a handshake.
	kept, _ := wake(d2, d2)
	old := kept.Agent()
	if err := d2.Save(ctx, inst, sleep, false, nil); err != nil {
		t.Fatal(err)
	}
	token := mustState(t, sleep).Session
	parked := d2.takeKept(spec, sleep, token)
	if parked != old || token == "" {
		t.Fatalf("the sleep did not park the session (token %q)", token)
	}
	parked.Close()
	d2.keep(spec, token, parked)
	woke2, err := d2.Restore(ctx, spec, sleep)
	if err != nil {
		t.Fatalf("Restore with a session that does not answer: %v", err)
	}
	inst = woke2
	if w := woke2.(vmm.Woken).Woke(); w.KeptSession || woke2.Agent() == parked {
		t.Fatalf("a session that did not answer was kept: %+v", w)
	}
	ticking(woke2.Agent())
}

func mustState(t *testing.T, dir string) savedState {
	t.Helper()
	st, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
