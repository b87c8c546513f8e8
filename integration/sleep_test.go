package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestSleep: processes survive sleep/wake, a sequence writer loses and
// repeats nothing over many cycles, the clock is right after a long sleep,
// idle timeouts fire and do not fire when they should, sleeping sprites
// survive a daemon kill -9, many sprites sleep and wake concurrently.
func TestSleep(t *testing.T) {
	for _, b := range backends() {
		t.Run(b, func(t *testing.T) { testSleep(t, b) })
	}
}

func waitState(t *testing.T, d *daemon, name, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		s := d.info(name)
		if s.State == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is %s after %s, want %s", name, s.State, limit, want)
		}
		time.Sleep(50 * time.Millisecond) // polling the daemon's view
	}
}

// alive reports whether pid runs (a zombie does not: this machine's init
// is slow to reap orphans).
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func testSleep(t *testing.T, backend string) {
	d := newDaemon(t, backend)
	d.ok("create", "z1", "--idle", "never")

	// A sequence writer appends numbers while the sprite sleeps and wakes.
	d.ok("exec", "z1", "--", "sh", "-c", "setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i >> /tmp/seq; sleep 0.02; done' </dev/null >/dev/null 2>&1 &")
	// 50 here; wisp bench sleep runs longer soaks.
	cycles := 50
	if testing.Short() {
		cycles = 10
	}
	// Each wake reports its split; a QEMU wake goes on with the agent
	// session from before the sleep (gVisor closes host sockets at a
	// checkpoint: a new one each time).
	checkWake := func(what string, since time.Time, kept bool) {
		t.Helper()
		w := d.info("z1").LastWake
		if w == nil || w.At.Before(since.Add(-time.Second)) || w.RestoreMs <= 0 || w.HandshakeMs <= 0 || w.TotalMs < w.RestoreMs+w.HandshakeMs {
			t.Fatalf("%s: last wake %+v", what, w)
		}
		if w.KeptSession != kept {
			t.Errorf("%s: kept session %v, want %v (%+v)", what, w.KeptSession, kept, w)
		}
	}
	for i := range cycles {
		pid := d.info("z1").Pid
		d.ok("sleep", "z1")
		if s := d.info("z1"); s.State != "sleeping" || alive(pid) {
			t.Fatalf("cycle %d: after sleep: state %s, VMM pid %d alive %v", i, s.State, pid, alive(pid))
		}
		t0 := time.Now()
		d.ok("exec", "z1", "--", "true") // wakes it
		checkWake(fmt.Sprintf("cycle %d", i), t0, backend == "qemu")
	}
	out := d.ok("exec", "z1", "--", "cat", "/tmp/seq")
	lines := strings.Fields(out)
	for i, l := range lines {
		if n, _ := strconv.Atoi(l); n != i+1 {
			t.Fatalf("sequence broken at line %d: %q (lost or repeated numbers over %d sleep/wake cycles)", i+1, l, cycles)
		}
	}
	if len(lines) < cycles {
		t.Errorf("only %d numbers over %d cycles: the writer did not keep running", len(lines), cycles)
	}

	// The clock is right at once after a long sleep.
	d.ok("sleep", "z1")
	time.Sleep(4 * time.Second) // the sleep whose length the guest must not lose
	guest, _ := strconv.ParseInt(strings.TrimSpace(d.ok("exec", "z1", "--", "date", "+%s")), 10, 64)
	if skew := time.Now().Unix() - guest; skew > 2 || skew < -2 {
		t.Errorf("guest clock off by %d s after a 4 s sleep", skew)
	}

	// kill -9 of the daemon while the sprite sleeps: it stays asleep and
	// wakes fine afterwards. Its sleep state reaches stable storage in the
	// background before that.
	d.ok("sleep", "z1")
	for deadline := time.Now().Add(60 * time.Second); !d.info("z1").SleepSynced; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the sleep state was not synced to stable storage within 60 s")
		}
	}
	d.kill9AndRestart()
	if s := d.info("z1"); s.State != "sleeping" {
		t.Fatalf("after daemon kill -9: %s", s.State)
	}
	t0 := time.Now()
	d.ok("exec", "z1", "--", "true")
	checkWake("wake by a restarted daemon", t0, false) // its session died with the daemon

	// Idle timeouts: fire for an unused sprite, not for one set to never,
	// not while an exec runs.
	d.ok("set", "z1", "idle=2s")
	d.ok("create", "z2", "--idle", "never")
	waitState(t, d, "z1", "sleeping", 30*time.Second)
	if s := d.info("z2"); s.State != "running" {
		t.Errorf("idle=never sprite is %s", s.State)
	}
	d.ok("exec", "z1", "--", "sleep", "4") // active for 4 s with idle=2s
	if s := d.info("z1"); s.State != "running" {
		t.Errorf("slept right after an exec: %s", s.State)
	}
	d.ok("set", "z1", "idle=never")
	d.ok("destroy", "z2")

	// Many sprites sleep and wake concurrently while execs hammer them.
	n := 20
	if backend == "qemu" {
		n = 4 // each QEMU sprite is a TCG-emulated VM on a 2-core machine
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("m%d", i)
		d.ok("create", names[i], "--idle", "never")
	}
	var wg sync.WaitGroup
	errs := make(chan string, n*10)
	for _, name := range names {
		wg.Go(func() {
			for j := range 3 {
				if _, e, code := d.wisp(nil, "sleep", name); code != 0 {
					errs <- fmt.Sprintf("sleep %s: %s", name, e)
				}
				var inner sync.WaitGroup
				for k := range 3 {
					inner.Go(func() {
						if out, e, code := d.wisp(nil, "exec", name, "--", "echo", fmt.Sprint(j, k)); code != 0 || out != fmt.Sprintf("%d %d\n", j, k) {
							errs <- fmt.Sprintf("exec %s: %d %q %s", name, code, out, e)
						}
					})
				}
				inner.Wait()
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	log, _ := os.ReadFile(d.logf.Name())
	if wakes := strings.Count(string(log), "sprite awake"); wakes > n*3+cycles+10 {
		t.Errorf("%d wakes logged: concurrent requests caused extra wakes", wakes)
	}
}
