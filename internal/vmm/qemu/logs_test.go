package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// TestConsoleFlood: a guest that writes without end to its serial console
// meets the log's bound at write time (QEMU drops what does not fit), and
// goes on.
func TestConsoleFlood(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the log bound is a tmpfs: root only")
	}
	d, newSpec := fixture(t)
	spec := newSpec(t, "flood", 256)
	spec.LogDir = filepath.Join(t.TempDir(), "logs")
	if err := vmm.MountLogDir(spec.LogDir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vmm.RemoveLogDir(spec.LogDir) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })

	t0 := time.Now()
	var out strings.Builder
	exit, err := inst.Agent().Exec(ctx, proto.ExecRequest{Argv: []string{"dd", "if=/dev/zero", "bs=64k", "count=80", "of=/dev/ttyS0"}, User: "root"},
		agent.ExecIO{Stdout: &out, Stderr: &out})
	t.Logf("dd: %+v %v %q", exit, err, out.String())
	t.Logf("5 MiB into the serial console in %s", time.Since(t0).Round(time.Millisecond))
	fi, err := os.Stat(filepath.Join(spec.LogDir, vmm.ConsoleLog))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > vmm.LogFSSize {
		t.Errorf("console log holds %d bytes, over the bound %d", fi.Size(), vmm.LogFSSize)
	}
	if fi.Size() < 1<<20 {
		t.Errorf("console log holds %d bytes: the flood did not reach it, the test proves nothing", fi.Size())
	}
	if out := sh(t, inst.Agent(), "echo alive"); out != "alive\n" {
		t.Errorf("after the flood: %q", out)
	}
}
