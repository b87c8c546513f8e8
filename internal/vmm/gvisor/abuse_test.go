package gvisor

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// TestAbuse: a memory hog and a disk filler each stay within their own
// sprite's limits (the hog its memory cgroup, the filler its disk, which
// it meets with ENOSPC), and meanwhile another sprite answers an exec
// within 1 s.
func TestAbuse(t *testing.T) {
	f := fixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := func(name string) vmm.Instance {
		inst, err := f.Driver.Start(ctx, f.NewSpec(t, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { inst.Kill(); <-inst.Done() })
		return inst
	}
	other := start("other")
	// rtt returns the median of 5 exec round trips of the other sprite.
	rtt := func() time.Duration {
		var d []time.Duration
		for range 5 {
			t0 := time.Now()
			if out, exit := sh(t, other.Agent(), "echo ok"); out != "ok\n" || exit.Code != 0 {
				t.Fatalf("other sprite: %q %+v", out, exit)
			}
			d = append(d, time.Since(t0))
		}
		slices.Sort(d)
		return d[2]
	}
	abuse := func(inst vmm.Instance, script string) (chan string, context.CancelFunc) {
		actx, stop := context.WithCancel(ctx)
		done := make(chan string, 1)
		go func() {
			var out strings.Builder
			exit, err := inst.Agent().Exec(actx, proto.ExecRequest{Argv: []string{"sh", "-c", script}, User: "root"}, agent.ExecIO{Stdout: &out, Stderr: &out})
			done <- strings.TrimSpace(out.String()) + " " + exitString(exit, err)
		}()
		return done, stop
	}

	// The hog fills /dev/shm (memory) far past its 256 MiB.
	hog := start("hog")
	done, stop := abuse(hog, "dd if=/dev/zero of=/dev/shm/hog bs=1M count=2048 2>&1")
	during := rtt()
	select {
	case res := <-done:
		t.Logf("hog: %s", res)
	case <-hog.Done():
		t.Log("hog: its sandbox was ended by its memory cgroup")
	case <-time.After(90 * time.Second):
		t.Error("hog still running after 90 s")
	}
	stop()
	t.Logf("other sprite's median exec round trip during the hog: %s", during)
	if during > time.Second {
		t.Errorf("median exec round trip during the hog: %s, want under 1 s", during)
	}

	// The filler writes until its 1 GiB disk is full.
	filler := start("filler")
	done, stop = abuse(filler, "dd if=/dev/zero of=/fill bs=1M 2>&1; sync")
	during = rtt()
	select {
	case res := <-done:
		if !strings.Contains(res, "No space left on device") {
			t.Errorf("filler: %s, want ENOSPC", res)
		}
		t.Logf("filler: %s", res)
	case <-time.After(2 * time.Minute):
		t.Error("filler still running after 2 min")
	}
	stop()
	t.Logf("other sprite's median exec round trip during the filler: %s", during)
	if during > time.Second {
		t.Errorf("median exec round trip during the filler: %s, want under 1 s", during)
	}
	if out, _ := shAs(t, filler.Agent(), "root", "rm /fill && echo freed"); out != "freed\n" {
		t.Errorf("filler after: %q", out)
	}
}

func exitString(e proto.Exit, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	return fmt.Sprintf("exit %d %s %s", e.Code, e.Signal, e.Error)
}
