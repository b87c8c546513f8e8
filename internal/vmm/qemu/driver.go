// Package qemu is the QEMU microVM backend: PVH kernel, initramfs with the
// agent, virtio-blk root, virtio-serial agent channel, file-backed RAM.
package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/network"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// Driver runs sprites as QEMU microVMs.
type Driver struct {
	Binary       string        // qemu-system-x86_64
	Accel        string        // "kvm" or "tcg"; empty: detect
	Sandbox      bool          // pass -sandbox
	BootTimeout  time.Duration // watchdog: a boot whose agent has not answered by then is retried
	BootAttempts int
	TSCKHz       int    // see Argv
	RunAs        string // drop to this user after start-up (-runas) when the spec has no UID; empty: stay
	// CPUModel, under KVM, is a named CPU model (with enforce) used
	// instead of -cpu host, so that sprites saved on one host restore on
	// another host of the model (cluster mode); empty: -cpu host.
	CPUModel string
	// Jail: a spec's UID is honoured (the daemon runs as root): its QEMU
	// runs as that user, chrooted into an empty folder, once started.
	Jail bool
	Log  *slog.Logger
	// Clone copies a file (a memory file into or out of a checkpoint),
	// creating dst; a reflink where the filesystem can. Nil:
	// storage.CopyFile.
	Clone func(src, dst string) error

	parkMu sync.Mutex
	parked map[string]parkedSession // by sprite folder: sessions of sleeping VMs (session.go)
}

var _ vmm.Driver = (*Driver)(nil)

// New returns a driver configured from what the host offers (see Detect).
// When the daemon runs as root, QEMU drops to runAs (if that user exists)
// once its files and sockets are open.
func New(log *slog.Logger, h HostInfo, runAs string) *Driver {
	d := &Driver{Binary: h.Binary, Accel: h.Accel, Sandbox: h.Sandbox, TSCKHz: h.TSCKHz,
		BootTimeout: 20 * time.Second, BootAttempts: 3, Log: log}
	d.Jail = os.Getuid() == 0
	if os.Getuid() == 0 && runAs != "" {
		if _, err := user.Lookup(runAs); err == nil {
			d.RunAs = runAs
		} else {
			log.Warn("QEMU will run as root: user not found", "user", runAs)
		}
	}
	return d
}

func (d *Driver) Name() string { return "qemu" }

// MemoryFile is where a running VM of spec keeps its RAM.
func (d *Driver) MemoryFile(spec vmm.Spec) string { return filepath.Join(spec.Dir, memFile) }

var _ vmm.MemoryFiler = (*Driver)(nil)

// WantsTap: a VM's virtio-net sits on a tap in the sprite's namespace.
func (d *Driver) WantsTap() bool { return true }

var _ vmm.TapUser = (*Driver)(nil)

// UsesUID: a jailed QEMU runs as the sprite's own uid.
func (d *Driver) UsesUID() bool { return d.Jail }

var _ vmm.UIDUser = (*Driver)(nil)

// errBootHang marks a boot the watchdog gave up on.
var errBootHang = errors.New("boot watchdog: agent did not answer")

// Start boots spec, retrying a boot that hangs.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	if len(filepath.Join(spec.Dir, agentSock)) > 100 {
		return nil, fmt.Errorf("sprite folder %s is too deep for a unix socket path; use a shorter data dir", spec.Dir)
	}
	d.dropKept(spec)
	var err error
	for attempt := 1; attempt <= max(d.BootAttempts, 1); attempt++ {
		var inst *Instance
		inst, err = d.boot(ctx, spec)
		if err == nil {
			return inst, nil
		}
		if !errors.Is(err, errBootHang) || ctx.Err() != nil {
			return nil, err
		}
		d.Log.Warn("boot hung, retrying", "sprite", spec.Name, "attempt", attempt, "err", err)
	}
	return nil, err
}

func (d *Driver) boot(ctx context.Context, spec vmm.Spec) (*Instance, error) {
	inst, err := d.spawn(spec)
	if err != nil {
		return nil, err
	}
	bctx, cancel := context.WithTimeoutCause(ctx, d.BootTimeout, errBootHang)
	defer cancel()
	if err := inst.connect(bctx); err != nil {
		inst.Kill()
		<-inst.done
		return nil, fmt.Errorf("boot %s: %w%s", spec.Name, err, d.diagnose(spec))
	}
	return inst, nil
}

// spawn starts QEMU for spec with extra arguments appended to Argv.
func (d *Driver) spawn(spec vmm.Spec, extra ...string) (*Instance, error) {
	for _, f := range []string{agentSock, qmpSock, pidFile} {
		os.Remove(filepath.Join(spec.Dir, f))
	}
	// Appending: the daemon cuts the log down to its tail as it grows.
	logf, err := os.OpenFile(filepath.Join(spec.Logs(), qemuLog), os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// The VM's life is not the request's: no CommandContext, a session of
	// its own so signals to the daemon's group do not reach it.
	cmd := exec.Command(d.Binary, append(d.Argv(spec), extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if spec.Net != nil {
		// QEMU gets the tap as a descriptor: it may neither open devices
		// nor enter namespaces once sandboxed.
		tap, err := network.OpenTap(spec.Net.Netns, spec.Net.Link)
		if err != nil {
			return nil, fmt.Errorf("network of %s: %w", spec.Name, err)
		}
		defer tap.Close()
		cmd.ExtraFiles = []*os.File{tap}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if d.jailed(spec) {
		if err := makeJail(filepath.Join(spec.Dir, jailDir)); err != nil {
			return nil, fmt.Errorf("start %s: %w", spec.Name, err)
		}
	}
	cg, cgErr := vmm.HostCgroups.Make(cgroupOf(spec), d.limits(spec))
	if cgErr != nil && os.Getuid() == 0 {
		return nil, fmt.Errorf("start %s: %w", spec.Name, cgErr)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", d.Binary, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		removeCgroup(spec)
		close(done)
	}()
	if cg != nil {
		// QEMU's threads so far move with it; later ones are born there.
		if err := cg.Join(cmd.Process.Pid); err != nil {
			cmd.Process.Kill()
			<-done
			return nil, fmt.Errorf("start %s: %w", spec.Name, err)
		}
	}
	return &Instance{spec: spec, d: d, pid: cmd.Process.Pid, done: done}, nil
}

// qemuTasks bounds a QEMU's threads (vCPUs, I/O workers, RCU, migration;
// a few dozen in use): guest processes cost the host nothing here, but a
// guest must not make QEMU spawn threads without end.
const qemuTasks = 256

// Host memory a QEMU may use beyond its guest's RAM: its own heap, device
// buffers, and under TCG the translated-code cache, which QEMU 7.2 sizes
// at 1 GiB for system emulation and fills as the guest runs new code.
const (
	overheadMiB    = 256
	tcgOverheadMiB = 1024 + overheadMiB
)

// cpuPeriod is the cgroup CPU period (µs); a QEMU gets its vCPUs' worth
// of it and half a CPU more for its main loop (virtio, the agent's
// channel, migration), which under TCG runs beside busy vCPU threads.
const cpuPeriod = 100000

// limits are the host resources of spec's QEMU, from the sprite's size.
func (d *Driver) limits(spec vmm.Spec) vmm.Limits {
	over := int64(overheadMiB)
	if d.Accel != "kvm" {
		over = tcgOverheadMiB
	}
	l := vmm.Limits{Tasks: qemuTasks}
	if spec.MemoryMiB > 0 {
		l.MemoryBytes = (int64(spec.MemoryMiB) + over) << 20
	}
	if spec.CPUs > 0 {
		l.CPUQuota, l.CPUPeriod = int64(spec.CPUs)*cpuPeriod+cpuPeriod/2, cpuPeriod
	}
	return l
}

// cgroupOf names the cgroup of spec's QEMU.
func cgroupOf(spec vmm.Spec) string { return vmm.CgroupParent + "/qemu-" + spec.ID }

// removeCgroup removes spec's cgroup once its QEMU is gone.
func removeCgroup(spec vmm.Spec) { vmm.HostCgroups.Open(cgroupOf(spec)).Remove() }

// makeJail makes dir the empty, root-owned, read-only folder a jailed
// QEMU chroots into: everything it uses is open before it gets there.
func makeJail(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("jail %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, 0o555); err != nil {
		return fmt.Errorf("jail %s: %w", dir, err)
	}
	return os.Chmod(dir, 0o555) // whatever the umask
}

// diagnose returns the tails of QEMU's log and the console for an error.
func (d *Driver) diagnose(spec vmm.Spec) string {
	var b strings.Builder
	for _, f := range []string{qemuLog, consoleLog} {
		data, _ := vmm.Tail(filepath.Join(spec.Logs(), f), 1500)
		data = bytes.TrimSpace(data)
		if len(data) > 0 {
			fmt.Fprintf(&b, "\n--- %s (tail) ---\n%s", f, data)
		}
	}
	return b.String()
}

// Adopt re-attaches to a QEMU that kept running while the daemon was down.
func (d *Driver) Adopt(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	pid, err := livePid(spec)
	if err != nil {
		return nil, err
	}
	done, err := vmm.WatchPid(pid)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", vmm.ErrNotRunning, err)
	}
	inst := &Instance{spec: spec, d: d, pid: pid, done: done}
	go func() { <-done; removeCgroup(spec) }()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// A daemon that died in the middle of a save leaves the VM paused: its
	// agent cannot answer until it runs again.
	if err := inst.resumeIfPaused(cctx); err != nil {
		return nil, fmt.Errorf("adopt %s (pid %d): %w", spec.Name, pid, err)
	}
	if err := inst.connect(cctx); err != nil {
		return nil, fmt.Errorf("adopt %s (pid %d): %w", spec.Name, pid, err)
	}
	return inst, nil
}

// Reap kills the sprite's QEMU process, if one runs, and waits until it
// has exited. The process is pinned by a pidfd before its identity is
// checked, and signalled through it, so a reused pid is never hit.
func (d *Driver) Reap(ctx context.Context, spec vmm.Spec) error {
	d.dropKept(spec)
	pid, err := livePid(spec)
	if err != nil {
		return nil // nothing runs
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil // gone meanwhile
	}
	defer unix.Close(pidfd)
	if again, err := livePid(spec); err != nil || again != pid {
		return nil // gone, or the pid now names another process
	}
	done, err := vmm.WatchPid(pid)
	if err != nil {
		return nil
	}
	if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("reap %s (pid %d): %w", spec.Name, pid, err)
	}
	select {
	case <-done:
		d.Log.Info("ended a VM the daemon could not reach", "sprite", spec.Name, "pid", pid)
		removeCgroup(spec)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("reap %s (pid %d): %w", spec.Name, pid, context.Cause(ctx))
	}
}

// resumeIfPaused continues a VM whose vCPUs are stopped.
func (i *Instance) resumeIfPaused(ctx context.Context) error {
	mon, err := dialMonitor(ctx, filepath.Join(i.spec.Dir, qmpSock), i.done)
	if err != nil {
		return err
	}
	defer mon.Close()
	raw, err := mon.run(ctx, "query-status", nil, nil)
	if err != nil {
		return err
	}
	var st struct {
		Running bool   `json:"running"`
		Status  string `json:"status"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("query-status: %w", err)
	}
	if st.Running {
		return nil
	}
	i.d.Log.Warn("adopted VM was paused; resuming", "sprite", i.spec.Name, "status", st.Status)
	_, err = mon.run(ctx, "cont", nil, nil)
	return err
}

// livePid reads the pid file and checks the process is this sprite's QEMU
// (not a recycled pid) and not a zombie.
func livePid(spec vmm.Spec) (int, error) {
	b, err := os.ReadFile(filepath.Join(spec.Dir, pidFile))
	if err != nil {
		return 0, fmt.Errorf("%w: %w", vmm.ErrNotRunning, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%w: bad pid file", vmm.ErrNotRunning)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("wisp-"+spec.ID+",")) {
		return 0, fmt.Errorf("%w: pid %d is not this sprite's VMM", vmm.ErrNotRunning, pid)
	}
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
		return 0, fmt.Errorf("%w: pid %d is a zombie", vmm.ErrNotRunning, pid)
	}
	return pid, nil
}

// Instance is one QEMU process.
type Instance struct {
	spec vmm.Spec
	d    *Driver
	pid  int
	done <-chan struct{}

	mu sync.Mutex
	ag *agent.Client

	woke vmm.WakeSplit // how Restore went
}

var _ vmm.Instance = (*Instance)(nil)

// connect dials the agent socket (QEMU creates it early in its start-up)
// and performs the handshake.
func (i *Instance) connect(ctx context.Context) error {
	return i.connectEvery(ctx, 250*time.Millisecond)
}

// connectEvery is connect with Hello re-sent every resend. The guest
// answers each nonce once, so a short resend costs only skipped lines.
func (i *Instance) connectEvery(ctx context.Context, resend time.Duration) error {
	conn, err := i.dialAgent(ctx)
	if err != nil {
		return err
	}
	hctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-i.done:
			cancel(errors.New("QEMU exited during start-up"))
		case <-hctx.Done():
		}
	}()
	ag, err := agent.Connect(hctx, conn, resend)
	if err != nil {
		conn.Close()
		return err
	}
	i.setAgent(ag)
	return nil
}

func (i *Instance) Info() vmm.Info {
	return vmm.Info{Backend: "qemu", Accel: i.d.Accel, Pid: i.pid}
}

// Confinement reports what confines the QEMU process now.
func (i *Instance) Confinement() (vmm.Confinement, error) { return vmm.Inspect(i.pid) }

var _ vmm.Confined = (*Instance)(nil)

func (i *Instance) Agent() *agent.Client {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.ag
}

func (i *Instance) Done() <-chan struct{} { return i.done }

// Stop flushes the guest, then quits QEMU through QMP; SIGKILL if it does
// not go in time.
func (i *Instance) Stop(ctx context.Context) error {
	select {
	case <-i.done:
		return nil
	default:
	}
	vmm.FlushGuest(ctx, i.d.Log, i.spec.Name, i.Agent())
	if err := i.qmp("quit"); err != nil {
		i.d.Log.Warn("qmp quit", "sprite", i.spec.Name, "err", err)
	}
	select {
	case <-i.done:
	case <-time.After(10 * time.Second):
		i.Kill()
		<-i.done
	case <-ctx.Done():
		i.Kill()
		<-i.done
	}
	i.Close()
	return nil
}

// qmp runs one command on a fresh QMP connection.
func (i *Instance) qmp(cmd string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mon, err := dialMonitor(ctx, filepath.Join(i.spec.Dir, qmpSock), i.done)
	if err != nil {
		return err
	}
	defer mon.Close()
	_, err = mon.run(ctx, cmd, nil, nil)
	return err
}

// Kill ends QEMU at once. Once Done is closed it does nothing: the pid may
// belong to another process by then.
func (i *Instance) Kill() error {
	select {
	case <-i.done:
		return nil
	default:
	}
	err := syscall.Kill(i.pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

func (i *Instance) Close() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.ag != nil {
		i.ag.Close()
		i.ag = nil
	}
	return nil
}
