// Package vmmtest is a function-field fake vmm.Driver for unit tests.
package vmmtest

import (
	"context"
	"os"
	"sync"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// Driver calls its fields; nil fields succeed with a new Instance.
type Driver struct {
	StartFunc func(ctx context.Context, spec vmm.Spec) (vmm.Instance, error)
	AdoptFunc func(ctx context.Context, spec vmm.Spec) (vmm.Instance, error)
	ReapFunc  func(ctx context.Context, spec vmm.Spec) error
	UID       bool // UsesUID's answer
}

func (d *Driver) UsesUID() bool { return d.UID }

var _ vmm.Driver = (*Driver)(nil)

func (d *Driver) Name() string { return "fake" }

func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	if d.StartFunc != nil {
		return d.StartFunc(ctx, spec)
	}
	return NewInstance(), nil
}

func (d *Driver) Adopt(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	if d.AdoptFunc != nil {
		return d.AdoptFunc(ctx, spec)
	}
	return nil, vmm.ErrNotRunning
}

func (d *Driver) Reap(ctx context.Context, spec vmm.Spec) error {
	if d.ReapFunc != nil {
		return d.ReapFunc(ctx, spec)
	}
	return nil
}

// Instance is a fake running instance; Exit makes it die on its own.
type Instance struct {
	once    sync.Once
	done    chan struct{}
	Stopped bool          // set by Stop
	Client  *agent.Client // what Agent returns (nil: no agent answers)
}

var _ vmm.Instance = (*Instance)(nil)

func NewInstance() *Instance { return &Instance{done: make(chan struct{})} }

func (i *Instance) Info() vmm.Info       { return vmm.Info{Backend: "fake", Accel: "none", Pid: 1} }
func (i *Instance) Agent() *agent.Client { return i.Client }
func (i *Instance) Exit()                { i.once.Do(func() { close(i.done) }) }
func (i *Instance) Stop(context.Context) error {
	i.Stopped = true
	i.Exit()
	return nil
}
func (i *Instance) Kill() error           { i.Exit(); return nil }
func (i *Instance) Close() error          { return nil }
func (i *Instance) Done() <-chan struct{} { return i.done }

// FullDriver is a Driver that also implements vmm.Freezer and vmm.Saver;
// nil function fields succeed (Save ends the instance unless keep).
type FullDriver struct {
	Driver
	FreezeFunc  func(ctx context.Context, inst vmm.Instance) (func() error, error)
	SaveFunc    func(ctx context.Context, inst vmm.Instance, dir string, keep bool, during func() error) error
	RestoreFunc func(ctx context.Context, spec vmm.Spec, dir string) (vmm.Instance, error)
}

var (
	_ vmm.Freezer = (*FullDriver)(nil)
	_ vmm.Saver   = (*FullDriver)(nil)
)

func (d *FullDriver) Freeze(ctx context.Context, inst vmm.Instance) (func() error, error) {
	if d.FreezeFunc != nil {
		return d.FreezeFunc(ctx, inst)
	}
	return func() error { return nil }, nil
}

func (d *FullDriver) Save(ctx context.Context, inst vmm.Instance, dir string, keep bool, during func() error) error {
	if d.SaveFunc != nil {
		return d.SaveFunc(ctx, inst, dir, keep, during)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if during != nil {
		if err := during(); err != nil {
			return err
		}
	}
	if !keep {
		inst.Kill()
	}
	return nil
}

func (d *FullDriver) Restore(ctx context.Context, spec vmm.Spec, dir string) (vmm.Instance, error) {
	if d.RestoreFunc != nil {
		return d.RestoreFunc(ctx, spec, dir)
	}
	return NewInstance(), nil
}
