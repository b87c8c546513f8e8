package gvisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/image/imagetest"
	"github.com/wisp-sh/wisp/internal/storage"
	"github.com/wisp-sh/wisp/internal/vmm"
	"github.com/wisp-sh/wisp/internal/vmm/conformance"
)

// fixture returns a driver and a NewSpec that makes a fresh folder and disk.
func fixture(t *testing.T) conformance.Fixture {
	runsc, err := FindRunsc()
	if err != nil {
		t.Skip(err)
	}
	if os.Getuid() != 0 {
		t.Skip("the gVisor backend needs root (loop mounts, runsc)")
	}
	fx := imagetest.Need(t)
	state, err := os.MkdirTemp("", "wgs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// runsc keeps an empty network namespace mounted in its root.
		unix.Unmount(filepath.Join(state, "null-netns"), unix.MNT_DETACH)
		os.RemoveAll(state)
	})
	d := New(slog.New(slog.NewTextHandler(os.Stderr, nil)), runsc, state)
	n := 0
	return conformance.Fixture{
		Driver: d,
		NewSpec: func(t *testing.T, name string) vmm.Spec {
			n++
			dir, err := os.MkdirTemp("", "wg")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			disk := filepath.Join(dir, "disk.img")
			if err := storage.CreateDisk(context.Background(), fx.Root, disk, 1); err != nil {
				t.Fatal(err)
			}
			return vmm.Spec{ID: fmt.Sprintf("t%d%d", os.Getpid(), n), Name: name, Dir: dir, CPUs: 1, MemoryMiB: 256,
				Disk: disk, DiskGiB: 1, Agent: fx.Agent}
		},
	}
}

func TestConformance(t *testing.T) {
	conformance.Run(t, fixture(t))
}

func sh(t *testing.T, ag *agent.Client, script string) (string, proto.Exit) {
	t.Helper()
	return shAs(t, ag, "", script)
}

func shAs(t *testing.T, ag *agent.Client, user, script string) (string, proto.Exit) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	exit, err := ag.Exec(ctx, proto.ExecRequest{Argv: []string{"sh", "-c", script}, User: user}, agent.ExecIO{Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("exec %q: %v", script, err)
	}
	return out.String(), exit
}

// TestIsolation: the sprite sees gVisor's kernel, not the host's files,
// processes or the daemon's folders; its socket folder holds only the socket.
func TestIsolation(t *testing.T) {
	f := fixture(t)
	spec := f.NewSpec(t, "iso")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := f.Driver.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })
	ag := inst.Agent()

	var uts unix.Utsname
	unix.Uname(&uts)
	hostKernel := string(bytes.TrimRight(uts.Release[:], "\x00"))
	if out, _ := sh(t, ag, "uname -r"); strings.TrimSpace(out) == hostKernel || !strings.Contains(out, "gvisor") {
		t.Errorf("uname -r = %q, host %q: want gVisor's kernel", out, hostKernel)
	}
	if out, _ := sh(t, ag, "dmesg"); !strings.Contains(out, "gVisor") {
		t.Errorf("dmesg does not come from gVisor:\n%s", out)
	}

	hostDir := t.TempDir()
	marker := filepath.Join(hostDir, "host-marker")
	if err := os.WriteFile(marker, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{marker, hostDir, spec.Dir, spec.Disk, f.Driver.(*Driver).StateRoot} {
		if out, exit := shAs(t, ag, "root", "test -e "+p); exit.Code == 0 {
			t.Errorf("host path %s is visible in the sandbox %s", p, out)
		}
	}

	self := strconv.Itoa(os.Getpid())
	if out, exit := sh(t, ag, "cat /proc/"+self+"/cmdline"); exit.Code == 0 && strings.Contains(out, ".test") {
		t.Errorf("host test process visible: %q", out)
	}
	out, _ := sh(t, ag, "ls /proc | grep -E '^[0-9]+$'")
	if pids := strings.Fields(out); len(pids) > 4 || pids[0] != "1" {
		t.Errorf("sandbox sees pids %v, want only its own few", pids)
	}
	if out, _ := sh(t, ag, "cat /proc/1/cmdline | tr '\\0' ' '"); !strings.HasPrefix(out, guestAgent) {
		t.Errorf("pid 1 is %q, want the agent", out)
	}

	if out, _ := shAs(t, ag, "root", "ls -A "+guestSockDir); out != sockName+"\n" {
		t.Errorf("socket folder holds %q, want only %s", out, sockName)
	}

	// The socket folder is writable from inside, but it is a tiny tmpfs:
	// nothing a guest writes there reaches the pool.
	if out, exit := shAs(t, ag, "root", "dd if=/dev/zero of="+guestSockDir+"/fill bs=64k count=16"); exit.Code == 0 {
		t.Errorf("wrote 1 MiB into the socket folder: %q", out)
	}
	if out, exit := shAs(t, ag, "root", "for i in $(seq 32); do touch "+guestSockDir+"/f$i || exit 3; done"); exit.Code != 3 {
		t.Errorf("made 32 files in the socket folder: %q %+v", out, exit)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(spec.Dir, sockDir), &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Errorf("socket folder on the host: statfs %+v %v, want a tmpfs of its own", st.Type, err)
	} else if total := st.Blocks * uint64(st.Bsize); total > 64<<10 {
		t.Errorf("socket folder's tmpfs holds %d bytes", total)
	}
	shAs(t, ag, "root", "rm -f "+guestSockDir+"/f* "+guestSockDir+"/fill")

	// The host mounts the guest's disk without honouring its device
	// nodes or setuid bits.
	if err := unix.Statfs(filepath.Join(spec.Dir, rootfsDir), &st); err != nil {
		t.Fatal(err)
	} else if st.Flags&unix.ST_NOSUID == 0 || st.Flags&unix.ST_NODEV == 0 {
		t.Errorf("disk mounted on the host with flags %#x, want nosuid and nodev", st.Flags)
	}
}

// TestCrash: a sandbox that died while the daemon was away (no Stop, no
// cleanup) is reported as not running, and the sprite starts again from its
// disk despite the stale mount and runsc state.
func TestCrash(t *testing.T) {
	f := fixture(t)
	spec := f.NewSpec(t, "crash")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := f.Driver.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if out, exit := sh(t, inst.Agent(), "echo kept > $HOME/crash && sync"); exit.Code != 0 {
		t.Fatalf("write: %q %+v", out, exit)
	}
	inst.Close()
	unix.Kill(inst.Info().Pid, unix.SIGKILL)
	<-inst.Done()

	inst, err = f.Driver.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start over a crashed sandbox: %v", err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })
	if out, _ := sh(t, inst.Agent(), "cat $HOME/crash"); out != "kept\n" {
		t.Errorf("after crash: %q", out)
	}
	if out, _ := sh(t, inst.Agent(), "grep MemTotal /proc/meminfo"); !strings.Contains(out, strconv.Itoa(spec.MemoryMiB<<10)+" kB") {
		t.Errorf("memory limit not seen by the guest: %q", out)
	}

	inst.Close()
	unix.Kill(inst.Info().Pid, unix.SIGKILL)
	<-inst.Done()
	if _, err := f.Driver.Adopt(ctx, spec); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("Adopt of a crashed sandbox: %v, want ErrNotRunning", err)
	}
	if dev := loopBacking(spec.Disk); dev != "" {
		t.Errorf("disk still attached to %s after Adopt cleaned up", dev)
	}
}

// TestTmpSymlink: the sprite's user cannot make the host bind a host folder
// into the sandbox by turning /tmp into a symlink.
func TestTmpSymlink(t *testing.T) {
	f := fixture(t)
	spec := f.NewSpec(t, "tmplink")
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "host-marker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := f.Driver.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })
	if out, exit := shAs(t, inst.Agent(), "root", "umount /tmp && rm -rf /tmp && ln -s "+hostDir+" /tmp && sync"); exit.Code != 0 {
		t.Fatalf("symlink /tmp: %q %+v", out, exit)
	}
	if err := inst.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	inst2, err := f.Driver.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst2.Kill(); <-inst2.Done() })
	out, _ := shAs(t, inst2.Agent(), "root", "ls -la /tmp/; ls -d /tmp.wisp-*")
	if strings.Contains(out, "host-marker") || !strings.Contains(out, "/tmp.wisp-") {
		t.Errorf("/tmp after restart: %q, want an empty folder and the symlink aside", out)
	}
}
