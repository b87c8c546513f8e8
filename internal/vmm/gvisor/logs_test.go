package gvisor

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/vmm"
)

// TestConsoleFlood: a guest that writes without end into its console (the
// agent's output, which runsc writes to the host's log) meets the log's
// bound at write time, and its sandbox goes on.
func TestConsoleFlood(t *testing.T) {
	f := fixture(t)
	spec := f.NewSpec(t, "flood")
	spec.LogDir = filepath.Join(t.TempDir(), "logs")
	if err := vmm.MountLogDir(spec.LogDir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vmm.RemoveLogDir(spec.LogDir) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := f.Driver.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })

	out, exit := shAs(t, inst.Agent(), "root", "dd if=/dev/zero bs=64k count=320 > /proc/1/fd/1")
	t.Logf("20 MiB into the console: %+v %q", exit, out)
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
	if out, _ := sh(t, inst.Agent(), "echo alive"); out != "alive\n" {
		t.Errorf("after the flood: %q", out)
	}
}
