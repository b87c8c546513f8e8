// Package gvisor is the gVisor backend: each sprite is a runsc sandbox
// whose root is the sprite's ext4 disk, loop-mounted on the host. The agent
// runs as the sandbox's PID 1 and dials a unix socket the host listens on.
package gvisor

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/network"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// DefaultRunsc is where `make deps` installs runsc.
const DefaultRunsc = "/usr/local/libexec/wisp/runsc"

// Files in the sprite's folder.
const (
	rootfsDir = "rootfs" // the disk's mount point, the bundle's root
	bundleDir = "bundle" // config.json
	sockDir   = "sock"   // a tiny tmpfs, bound into the sandbox: holds only the socket
	sockName  = "agent.sock"
)

const (
	bootTimeout  = 30 * time.Second
	adoptTimeout = 10 * time.Second
	// runscTimeout bounds one runsc call (Driver.Timeout overrides it);
	// a checkpoint, which writes the sandbox's memory, gets ten times as
	// long. A runsc that hangs must not hold a sprite's lock for ever.
	runscTimeout = 30 * time.Second
	// detachTimeout bounds the wait for the agent to hang up (see detach).
	detachTimeout = 10 * time.Second
)

// FindRunsc returns the runsc to use: $WISP_RUNSC, else DefaultRunsc.
func FindRunsc() (string, error) {
	p := os.Getenv("WISP_RUNSC")
	if p == "" {
		p = DefaultRunsc
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("runsc not found at %s (run `make deps`, or set WISP_RUNSC): %w", p, err)
	}
	return p, nil
}

// Driver runs sprites as gVisor sandboxes.
type Driver struct {
	Runsc     string
	Platform  string // "systrap"
	StateRoot string // runsc --root: its state files for all sandboxes
	Log       *slog.Logger
	Timeout   time.Duration // bounds one runsc call; 0 means runscTimeout
}

var _ vmm.Driver = (*Driver)(nil)

// New returns a driver on the systrap platform (the one that works without
// hardware virtualization) keeping runsc's state under stateRoot.
func New(log *slog.Logger, runsc, stateRoot string) *Driver {
	return &Driver{Runsc: runsc, Platform: "systrap", StateRoot: stateRoot, Log: log}
}

func (d *Driver) Name() string { return "gvisor" }

func containerID(spec vmm.Spec) string { return "wisp-" + spec.ID }

// runsc runs one runsc command and returns its stdout. It is killed when
// ctx ends or its time is up (see runscTimeout).
func (d *Driver) runsc(ctx context.Context, args ...string) ([]byte, error) {
	limit := cmp.Or(d.Timeout, runscTimeout)
	if args[0] == "checkpoint" {
		limit *= 10
	}
	ctx, cancel := context.WithTimeoutCause(ctx, limit, fmt.Errorf("runsc %s gave no answer in %s", args[0], limit))
	defer cancel()
	cmd := exec.CommandContext(ctx, d.Runsc, append([]string{"--root", d.StateRoot}, args...)...)
	cmd.WaitDelay = time.Second // a child left holding its output must not hold us
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ctx.Err() != nil {
		return out, fmt.Errorf("runsc %s: %w", args[0], context.Cause(ctx))
	}
	if err != nil {
		return out, fmt.Errorf("runsc %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// state returns the sandbox's status ("running", "stopped", ...) and pid.
func (d *Driver) state(ctx context.Context, spec vmm.Spec) (string, int, error) {
	out, err := d.runsc(ctx, "state", containerID(spec))
	if err != nil {
		return "", 0, err
	}
	var st struct {
		Status string `json:"status"`
		Pid    int    `json:"pid"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return "", 0, fmt.Errorf("runsc state: %w", err)
	}
	return st.Status, st.Pid, nil
}

// cleanup removes what a sandbox leaves behind: its runsc state and cgroup,
// the rootfs mount (thawed first: see Freeze). Idempotent.
func (d *Driver) cleanup(ctx context.Context, spec vmm.Spec) error {
	// Bounded by runscTimeout, not by ctx: a cleanup is not to be cut short.
	d.runsc(context.WithoutCancel(ctx), "delete", "--force", containerID(spec)) // fails when already gone
	thawFS(filepath.Join(spec.Dir, rootfsDir))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return errors.Join(unmountAll(filepath.Join(spec.Dir, sockDir)),
		unmountDisk(ctx, spec.Disk, filepath.Join(spec.Dir, rootfsDir)))
}

// Reap ends the sprite's sandbox, if one runs, and cleans up after it
// (runsc delete --force kills a running sandbox).
func (d *Driver) Reap(ctx context.Context, spec vmm.Spec) error {
	if err := d.cleanup(ctx, spec); err != nil {
		return fmt.Errorf("reap %s: %w", spec.Name, err)
	}
	return nil
}

// Start mounts the disk, starts the sandbox and waits for its agent.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	inst, err := d.boot(ctx, spec, "")
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	return inst, nil
}

// boot brings a sandbox of spec up: a new one, or one restored from the
// checkpoint in image when that is not "". Each step registers its undo; on
// failure they run in reverse.
func (d *Driver) boot(ctx context.Context, spec vmm.Spec, image string) (_ *Instance, err error) {
	sock := filepath.Join(spec.Dir, sockDir, sockName)
	if len(sock) > 100 {
		return nil, fmt.Errorf("sprite folder %s is too deep for a unix socket path; use a shorter data dir", spec.Dir)
	}
	var undo []func() error
	defer func() {
		if err != nil {
			var errs []error
			for i := len(undo) - 1; i >= 0; i-- {
				errs = append(errs, undo[i]())
			}
			if uerr := errors.Join(errs...); uerr != nil {
				d.Log.Warn("undo failed start", "sprite", spec.Name, "err", uerr)
			}
		}
	}()
	cleanup := func() error { return d.cleanup(context.WithoutCancel(ctx), spec) }

	// A crash may have left a sandbox, its state or the mount behind.
	if err := cleanup(); err != nil {
		return nil, err
	}
	rootfs := filepath.Join(spec.Dir, rootfsDir)
	for _, dir := range []string{d.StateRoot, rootfs, filepath.Join(spec.Dir, bundleDir), filepath.Join(spec.Dir, sockDir)} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	}
	diskIO, err := mountDisk(spec.Disk, rootfs)
	if err != nil {
		return nil, err
	}
	undo = append(undo, cleanup)
	if err := mountSockDir(filepath.Join(spec.Dir, sockDir)); err != nil {
		return nil, err
	}
	if err := d.ensureTmp(spec, rootfs); err != nil {
		return nil, err
	}

	ln, err := listen(sock)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() error { ln.Close(); return nil }) // attach may have closed it

	cfg, err := json.MarshalIndent(ociConfig(spec, rootfs, filepath.Dir(sock), diskIO), "", "\t")
	if err != nil {
		return nil, err
	}
	bundle := filepath.Join(spec.Dir, bundleDir)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), cfg, 0o600); err != nil {
		return nil, err
	}
	if spec.Net != nil {
		if err := network.AddressVeth(spec.Net); err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
	}
	args := []string{"run", "--detach", "--bundle", bundle, containerID(spec)}
	if image != "" {
		args = []string{"restore", "--detach", "--image-path", image, "--bundle", bundle, containerID(spec)}
	}
	if err := d.run(ctx, spec, args...); err != nil {
		return nil, fmt.Errorf("%w%s", err, diagnose(spec))
	}
	inst, err := d.attach(ctx, spec, ln, bootTimeout)
	if err != nil {
		return nil, fmt.Errorf("%w%s", err, diagnose(spec))
	}
	return inst, nil
}

// ensureTmp makes the disk's /tmp a plain directory, to be bound over
// runsc's tmpfs. Anything else there is renamed aside, never followed: the
// sprite's user controls the disk, and a symlink bound into the sandbox
// would expose the host path it names. Nothing but this process touches
// the disk before the sandbox starts, so the check does not race.
func (d *Driver) ensureTmp(spec vmm.Spec, rootfs string) error {
	path := filepath.Join(rootfs, "tmp")
	fi, err := os.Lstat(path)
	if err == nil && fi.IsDir() {
		return nil
	}
	if err == nil {
		aside := fmt.Sprintf("%s.wisp-%d", path, time.Now().Unix())
		d.Log.Warn("/tmp is not a directory, renaming it", "sprite", spec.Name, "to", "/"+filepath.Base(aside))
		if err := os.Rename(path, aside); err != nil {
			return err
		}
	}
	if err := os.Mkdir(path, 0o1777); err != nil {
		return err
	}
	return os.Chmod(path, 0o1777) // past the umask
}

// run starts the sandbox detached with args (`run --detach ...` or
// `restore --detach ...`): runsc returns once the container runs. The
// sandbox gets a session of its own and no context, so it outlives the
// daemon; only the wait for runsc is bounded by ctx.
func (d *Driver) run(ctx context.Context, spec vmm.Spec, args ...string) error {
	// runsc's and the agent's output.
	logf, err := os.OpenFile(filepath.Join(spec.Logs(), vmm.ConsoleLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	netMode := "none"
	if spec.Net != nil {
		netMode = "sandbox" // gVisor's netstack on the veth end in the sprite's namespace
	}
	cmd := exec.Command(d.Runsc, append([]string{
		"--root", d.StateRoot,
		"--platform", d.Platform,
		"--network", netMode,
		"--host-uds", "open", // the agent may connect to the host's socket
		"--overlay2", "none", // writes go to the disk, not to a memory overlay
		// Honour set-user-ID bits (sudo) inside the sandbox. runsc ignores
		// them by default, whatever the mount flags say; the elevation is to
		// root of the gVisor kernel, not of the host.
		"--allow-suid",
	}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d.Runsc, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			return fmt.Errorf("runsc %s: %w", args[0], err)
		}
		return nil
	case <-ctx.Done():
		cmd.Process.Kill()
		<-exited
		return context.Cause(ctx)
	}
}

// diagnose returns the tail of the console log for an error.
func diagnose(spec vmm.Spec) string {
	data, _ := vmm.Tail(filepath.Join(spec.Logs(), vmm.ConsoleLog), 1500)
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return ""
	}
	return fmt.Sprintf("\n--- %s (tail) ---\n%s", vmm.ConsoleLog, data)
}

// listen listens on path, replacing a stale socket file.
func listen(path string) (*net.UnixListener, error) {
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// A later listener may own the path by the time this one closes.
	ln.SetUnlinkOnClose(false)
	return ln, nil
}

// Adopt re-attaches to a sandbox that kept running while the daemon was
// down: it thaws a freeze the daemon may have left (see Freeze), listens
// on the socket again and waits for the agent to redial.
func (d *Driver) Adopt(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	status, _, err := d.state(ctx, spec)
	if err != nil || status != "running" {
		if cerr := d.cleanup(ctx, spec); cerr != nil {
			d.Log.Warn("clean up after sandbox", "sprite", spec.Name, "err", cerr)
		}
		if err == nil {
			err = fmt.Errorf("sandbox is %s", status)
		}
		return nil, fmt.Errorf("adopt %s: %w: %w", spec.Name, vmm.ErrNotRunning, err)
	}
	thawFS(filepath.Join(spec.Dir, rootfsDir))
	ln, err := listen(filepath.Join(spec.Dir, sockDir, sockName))
	if err != nil {
		return nil, err
	}
	inst, err := d.attach(ctx, spec, ln, adoptTimeout)
	if err != nil {
		ln.Close()
		if errors.Is(err, vmm.ErrNotRunning) { // it died just now
			d.cleanup(ctx, spec)
		}
		return nil, fmt.Errorf("adopt %s: %w", spec.Name, err)
	}
	return inst, nil
}

// attach watches the running sandbox's process and accepts the agent's
// connection on ln.
func (d *Driver) attach(ctx context.Context, spec vmm.Spec, ln *net.UnixListener, timeout time.Duration) (*Instance, error) {
	status, pid, err := d.state(ctx, spec)
	if err != nil {
		return nil, err
	}
	if status != "running" || pid <= 0 {
		return nil, fmt.Errorf("%w: sandbox is %s", vmm.ErrNotRunning, status)
	}
	exited, err := vmm.WatchPid(pid)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", vmm.ErrNotRunning, err)
	}
	inst := &Instance{spec: spec, d: d, pid: pid, ln: ln, exited: exited, done: make(chan struct{})}
	go inst.watch()

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := inst.connect(ctx); err != nil {
		inst.Close()
		return nil, err
	}
	return inst, nil
}

// maxBrokenHandshakes bounds the connections connect accepts whose
// handshake fails before it gives up.
const maxBrokenHandshakes = 20

// Instance is one sandbox.
type Instance struct {
	spec   vmm.Spec
	d      *Driver
	pid    int
	ln     *net.UnixListener
	exited <-chan struct{} // the sandbox process is gone
	done   chan struct{}   // ... and cleaned up

	mu     sync.Mutex
	ag     *agent.Client
	conn   *net.UnixConn // ag's connection
	closed bool          // the daemon let go (Close)
	killed bool          // this instance ended the sandbox (Kill, Stop)
}

var _ vmm.Instance = (*Instance)(nil)

// watch closes done once the sandbox has exited and its state and mount
// are cleaned up: when Done is closed, the disk is free. An instance the
// daemon let go of (Close) cleans up only if it was also told to Kill: a
// newer instance of the same sprite may own the mount by then.
func (i *Instance) watch() {
	<-i.exited
	i.mu.Lock()
	owner := !i.closed || i.killed
	i.mu.Unlock()
	if owner {
		if err := i.d.cleanup(context.Background(), i.spec); err != nil {
			i.d.Log.Warn("clean up after sandbox", "sprite", i.spec.Name, "err", err)
		}
	}
	close(i.done)
}

// connect accepts the agent's connection and performs the handshake. A
// checkpoint breaks the connection (see Save): connect runs again then and
// replaces the client.
func (i *Instance) connect(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	watched := make(chan struct{})
	defer func() { cancel(nil); <-watched }() // no deadline set after return
	i.ln.SetDeadline(time.Time{})             // the last connect set one
	go func() {
		defer close(watched)
		select {
		case <-i.exited:
			cancel(fmt.Errorf("sandbox exited: %w", vmm.ErrNotRunning))
		case <-ctx.Done():
		}
		i.ln.SetDeadline(time.Now()) // unblock Accept
	}()
	var (
		conn   *net.UnixConn
		ag     *agent.Client
		broken int
	)
	for ag == nil {
		c, err := i.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("agent did not connect: %w", context.Cause(ctx))
			}
			return err
		}
		// A connection can break during the handshake (seen right after a
		// restore under load); the agent redials whenever its session
		// ends, so wait for the next one until ctx ends.
		// Any process in the sandbox can connect: a bounded number of
		// tries, and one log line.
		if ag, err = agent.Connect(ctx, c, 250*time.Millisecond); err != nil {
			c.Close()
			if broken++; ctx.Err() != nil || broken >= maxBrokenHandshakes {
				return fmt.Errorf("%w (%d connections broke during the handshake)", err, broken)
			}
			if broken == 1 {
				i.d.Log.Warn("agent connection broke during the handshake; waiting for its redial", "sprite", i.spec.Name, "err", err)
			}
			continue
		}
		conn = c
	}
	i.mu.Lock()
	old := i.ag
	i.ag, i.conn = ag, conn
	i.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (i *Instance) Info() vmm.Info {
	return vmm.Info{Backend: "gvisor", Accel: i.d.Platform, Pid: i.pid}
}

// Confinement reports what confines the sandbox process now.
func (i *Instance) Confinement() (vmm.Confinement, error) { return vmm.Inspect(i.pid) }

var _ vmm.Confined = (*Instance)(nil)

func (i *Instance) Agent() *agent.Client {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.ag
}

func (i *Instance) Done() <-chan struct{} { return i.done }

// Stop flushes the guest, kills the sandbox and waits until it is gone and
// its disk unmounted.
func (i *Instance) Stop(ctx context.Context) error {
	select {
	case <-i.done:
		return nil
	default:
	}
	vmm.FlushGuest(ctx, i.d.Log, i.spec.Name, i.Agent())
	i.Kill()
	select {
	case <-i.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(i.pid, syscall.SIGKILL) // runsc kill did not do it
		select {
		case <-i.done:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	i.Close()
	return nil
}

// Kill ends the sandbox at once: runsc kill, or SIGKILL to the sandbox
// process when runsc cannot.
func (i *Instance) Kill() error {
	select {
	case <-i.done:
		return nil // the pid may belong to another process by now
	default:
	}
	i.mu.Lock()
	i.killed = true
	i.mu.Unlock()
	if _, err := i.d.runsc(context.Background(), "kill", containerID(i.spec), "KILL"); err == nil {
		return nil
	}
	err := syscall.Kill(i.pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Close drops the agent connection and the listener; the sandbox runs on.
func (i *Instance) Close() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return nil
	}
	i.closed = true
	if i.ag != nil {
		i.ag.Close()
		i.ag = nil
	}
	if err := i.ln.Close(); !errors.Is(err, net.ErrClosed) { // Save closes it
		return err
	}
	return nil
}

// Version returns the first line of `runsc --version`, or "" if it fails.
func Version(runsc string) string {
	out, err := exec.Command(runsc, "--version").Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}
