package gvisor

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/fsfreeze"
	"github.com/wisp-sh/wisp/internal/vmm"
)

var (
	_ vmm.Freezer = (*Driver)(nil)
	_ vmm.Saver   = (*Driver)(nil)
)

// instance returns inst as one of this driver's live instances.
func (d *Driver) instance(inst vmm.Instance) (*Instance, error) {
	i, ok := inst.(*Instance)
	if !ok || i.d != d {
		return nil, fmt.Errorf("gvisor: not an instance of this driver: %T", inst)
	}
	i.mu.Lock()
	closed := i.closed
	i.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("gvisor: sprite %s: instance is closed", i.spec.Name)
	}
	return i, nil
}

// Freeze makes the sprite's disk file consistent on the host. Data the guest
// write(2)s reaches the host file at once, but the sentry keeps pages of
// shared file mappings in its own cache until msync or sync: the agent
// syncs first (a few ms). Then the host mount of the disk is synced and
// frozen (FIFREEZE): the gofer's writes, and so the guest's, wait until
// thaw. If thaw does not come within proto.FreezeLimit, the mount thaws by
// itself and thaw reports that a copy made meanwhile may be torn. A freeze
// outlives a daemon that crashes before thawing (it belongs to the
// superblock, not to a file descriptor): the guest's writes hang until the
// restarted daemon's Adopt (or cleanup, if the sandbox died) thaws it.
func (d *Driver) Freeze(ctx context.Context, inst vmm.Instance) (func() error, error) {
	i, err := d.instance(inst)
	if err != nil {
		return nil, err
	}
	if err := i.Agent().Sync(ctx); err != nil {
		return nil, fmt.Errorf("freeze %s: guest sync: %w", i.spec.Name, err)
	}
	thaw, err := freezeFS(filepath.Join(i.spec.Dir, rootfsDir), proto.FreezeLimit)
	if err != nil {
		return nil, fmt.Errorf("freeze %s: %w", i.spec.Name, err)
	}
	return thaw, nil
}

// freezeFS syncs and freezes the filesystem mounted at dir; the returned
// func thaws it, and so does a timer after limit.
func freezeFS(dir string, limit time.Duration) (func() error, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	// Sync first, while writers still run: FIFREEZE then has little to
	// write and the frozen window stays short.
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		f.Close()
		return nil, fmt.Errorf("syncfs %s: %w", dir, err)
	}
	if err := fsfreeze.Freeze(int(f.Fd())); err != nil {
		f.Close()
		return nil, fmt.Errorf("FIFREEZE %s: %w", dir, err)
	}
	var (
		once    sync.Once
		thawErr error
	)
	thaw := func() error {
		once.Do(func() {
			thawErr = fsfreeze.Thaw(int(f.Fd()))
			f.Close()
			if thawErr != nil {
				thawErr = fmt.Errorf("FITHAW %s: %w", dir, thawErr)
			}
		})
		return thawErr
	}
	timer := time.AfterFunc(limit, func() { thaw() })
	return func() error {
		if !timer.Stop() {
			return errors.Join(thaw(), fmt.Errorf("%s was frozen longer than %s and thawed by itself: a copy made meanwhile may be torn", dir, limit))
		}
		return thaw()
	}, nil
}

// thawFS thaws the filesystem at dir if a freeze was left behind.
func thawFS(dir string) {
	f, err := os.Open(dir)
	if err != nil {
		return
	}
	defer f.Close()
	fsfreeze.Thaw(int(f.Fd())) // EINVAL when not frozen
}

// Save checkpoints the sandbox into dir (runsc checkpoint; the image holds
// the sentry's memory and kernel state, not the disk). runsc has no hook
// that runs while a checkpoint holds the sandbox stopped, so with keep and
// a during, the sandbox is paused around it (runsc pause/resume) and during
// runs in that window with the host mount frozen. Without keep the sandbox
// exits after the checkpoint and during runs once its disk is unmounted.
// The image is written to a temporary folder beside dir and renamed into
// place once complete, so a crash never leaves a partial dir.
//
// The agent is disconnected first (see detach); with keep, Save accepts its
// new connection before returning. Requests in flight fail.
func (d *Driver) Save(ctx context.Context, inst vmm.Instance, dir string, keep bool, during func() error) (err error) {
	i, err := d.instance(inst)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("save %s: %w", i.spec.Name, err)
		}
	}()
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := i.detach(ctx); err != nil {
		return errors.Join(err, i.reattach(ctx))
	}
	if keep {
		if err := errors.Join(d.checkpointKeep(ctx, i, tmp, during), i.reattach(ctx)); err != nil {
			return err
		}
		if err := saveAgent(i.spec, tmp); err != nil {
			return err
		}
		return replace(tmp, dir)
	}
	if _, err := d.runsc(ctx, "checkpoint", "--image-path", tmp, containerID(i.spec)); err != nil {
		return errors.Join(err, i.reattach(ctx))
	}
	// The sandbox exits after the checkpoint; watch cleans up.
	select {
	case <-i.done:
	case <-ctx.Done():
		return fmt.Errorf("sandbox still running after checkpoint: %w", context.Cause(ctx))
	}
	i.Close()
	if err := saveAgent(i.spec, tmp); err != nil {
		return err
	}
	// The state matches the disk whatever during does: keep it.
	if err := replace(tmp, dir); err != nil {
		return err
	}
	if during != nil {
		return during()
	}
	return nil
}

// replace renames the folder tmp to dir, replacing dir.
func replace(tmp, dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// detach ends the agent's connection and waits until the agent has let go
// of its end. gVisor closes a sandbox's host-UDS connections when it saves
// them (SCMSender.beforeSave, also with --leave-running) without waking
// their readers: an agent still connected would wait forever on a dead
// socket, after resume and after restore. The listener is closed first,
// so the agent's redials fail (it retries every 200 ms) until reattach.
// The wait is bounded (detachTimeout): a guest that never hangs up fails
// the save instead of holding the sprite.
func (i *Instance) detach(ctx context.Context) error {
	ctx, cancel := context.WithTimeoutCause(ctx, detachTimeout, fmt.Errorf("the agent did not hang up in %s", detachTimeout))
	defer cancel()
	i.mu.Lock()
	ag, conn := i.ag, i.conn
	i.mu.Unlock()
	i.ln.Close()
	// A duplicate of the socket stays open when the client closes conn
	// (it does on any error), so it sees the agent's end close.
	f, err := conn.File()
	if err != nil {
		return fmt.Errorf("disconnect agent: %w", err)
	}
	defer f.Close()
	defer ag.Close()
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Now()) })
	defer stop()
	// Half-close: the agent reads EOF and closes its socket; the duplicate
	// then reads EOF (after whatever the agent still sent).
	if err := conn.CloseWrite(); err != nil {
		return fmt.Errorf("disconnect agent: %w", err)
	}
	buf := make([]byte, 64<<10)
	for {
		_, err := f.Read(buf)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				err = context.Cause(ctx)
			}
			return fmt.Errorf("disconnect agent: %w", err)
		}
	}
}

// reattach listens again after detach and accepts the agent's redial.
func (i *Instance) reattach(ctx context.Context) error {
	ln, err := listen(filepath.Join(i.spec.Dir, sockDir, sockName))
	if err != nil {
		return err
	}
	i.mu.Lock()
	i.ln = ln
	i.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, adoptTimeout)
	defer cancel()
	if err := i.connect(ctx); err != nil {
		return fmt.Errorf("agent after checkpoint: %w", err)
	}
	return nil
}

// checkpointKeep checkpoints the running sandbox into image and leaves it
// running. With during, the sandbox is paused around the checkpoint and
// during runs in that window, with the host mount of the disk frozen.
func (d *Driver) checkpointKeep(ctx context.Context, i *Instance, image string, during func() error) (err error) {
	id := containerID(i.spec)
	checkpoint := func() error {
		// The checkpoint flushes the sentry's file writes to the gofer.
		_, err := d.runsc(ctx, "checkpoint", "--leave-running", "--image-path", image, id)
		return err
	}
	if during == nil {
		return checkpoint()
	}
	if _, err := d.runsc(ctx, "pause", id); err != nil {
		return err
	}
	defer func() {
		// Resume even when ctx has ended: a paused sandbox serves no one.
		if _, rerr := d.runsc(context.WithoutCancel(ctx), "resume", id); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	if err := checkpoint(); err != nil {
		return err
	}
	thaw, err := freezeFS(filepath.Join(i.spec.Dir, rootfsDir), proto.FreezeLimit)
	if err != nil {
		return err
	}
	return errors.Join(during(), thaw())
}

// Restore mounts the disk again and restores the sandbox from dir (runsc
// restore, with the same bundle). The agent, which was disconnected before
// the checkpoint, dials again and is accepted as at boot. Then it gets
// fresh entropy. Not the time: gVisor has no settimeofday (ENOSYS), and
// the sentry's clocks follow the host's across a restore anyway.
func (d *Driver) Restore(ctx context.Context, spec vmm.Spec, dir string) (vmm.Instance, error) {
	if _, err := os.Stat(filepath.Join(dir, "checkpoint.img")); err != nil {
		return nil, fmt.Errorf("restore %s: no checkpoint: %w", spec.Name, err)
	}
	inst, err := d.boot(ctx, spec, dir)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", spec.Name, err)
	}
	seed := make([]byte, 32)
	rand.Read(seed)
	if err := inst.Agent().SetTime(ctx, time.Time{}, seed); err != nil {
		inst.Kill()
		<-inst.Done()
		return nil, fmt.Errorf("restore %s: reseed guest: %w", spec.Name, err)
	}
	inst.woke.Handshake = time.Since(inst.ran)
	return inst, nil
}
