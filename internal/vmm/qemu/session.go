package qemu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// A sleeping VM's agent session is kept by the driver, parked (see
// agent.Client.Park), so that the wake goes on with it over the new
// QEMU's socket: no new handshake, and the guest never sees its host
// leave. It is kept in memory only: after a daemon restart, or when the
// state was saved by another session (another host, a checkpoint), the
// wake makes a new session as a boot does.

// parkTimeout bounds the wait for QEMU to take the bytes the host wrote;
// a guest that does not read its channel then gets a new session at wake.
const parkTimeout = time.Second

// keptAnswer bounds the first call on a kept session after the wake;
// without an answer the wake falls back to a new handshake.
const keptAnswer = 3 * time.Second

type parkedSession struct {
	token string // the saved state's Session: the state this session belongs to
	ag    *agent.Client
}

// parkAgent stops the instance's agent session's writes until QEMU has
// taken every byte, to keep the session across a save that ends QEMU. It
// returns the session and a token for the state, or nil if it cannot be
// kept (the session then ends with the instance).
func (i *Instance) parkAgent(ctx context.Context) (*agent.Client, string) {
	ag := i.Agent()
	if ag == nil {
		return nil, ""
	}
	pctx, cancel := context.WithTimeout(ctx, parkTimeout)
	defer cancel()
	if err := ag.Park(pctx); err != nil {
		ag.Unpark()
		i.d.Log.Info("agent session not kept across the sleep", "sprite", i.spec.Name, "err", err)
		return nil, ""
	}
	var raw [16]byte
	rand.Read(raw[:])
	return ag, hex.EncodeToString(raw[:])
}

// keep stores a parked session for the sprite's wake. Sessions of
// sprites whose folder is gone (destroyed while asleep) are let go.
func (d *Driver) keep(spec vmm.Spec, token string, ag *agent.Client) {
	d.parkMu.Lock()
	defer d.parkMu.Unlock()
	if d.parked == nil {
		d.parked = map[string]parkedSession{}
	}
	for dir, ps := range d.parked {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			ps.ag.Close()
			delete(d.parked, dir)
		}
	}
	if old, ok := d.parked[spec.Dir]; ok {
		old.ag.Close()
	}
	d.parked[spec.Dir] = parkedSession{token: token, ag: ag}
}

// takeKept returns the parked session that belongs to the state in dir
// (token), or nil. Any session parked for the sprite is taken: one that
// does not belong is closed.
func (d *Driver) takeKept(spec vmm.Spec, dir, token string) *agent.Client {
	d.parkMu.Lock()
	ps, ok := d.parked[spec.Dir]
	delete(d.parked, spec.Dir)
	d.parkMu.Unlock()
	if !ok {
		return nil
	}
	if ps.token == "" || ps.token != token || filepath.Clean(dir) != vmm.SleepDir(spec) {
		ps.ag.Close()
		return nil
	}
	return ps.ag
}

// dropKept closes the session parked for the sprite, if any: it boots
// afresh or ends.
func (d *Driver) dropKept(spec vmm.Spec) { d.takeKept(spec, "", "") }

// dialAgent connects to the agent socket of the instance's QEMU, which
// creates it early in its start-up.
func (i *Instance) dialAgent(ctx context.Context) (net.Conn, error) {
	path := filepath.Join(i.spec.Dir, agentSock)
	for {
		conn, err := net.Dial("unix", path)
		if err == nil {
			return conn, nil
		}
		select {
		case <-i.done:
			return nil, errors.New("QEMU exited during start-up")
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(2 * time.Millisecond): // the socket file appears within milliseconds
		}
	}
}

// resume makes a kept session the instance's again, once the restored
// guest runs, and sets the guest's clock through it. It reports whether
// the session answered; if not it is closed.
func (i *Instance) resume(ctx context.Context, ag *agent.Client, seed []byte) bool {
	ag.Unpark()
	i.setAgent(ag)
	ctx, cancel := context.WithTimeout(ctx, keptAnswer)
	defer cancel()
	if err := ag.SetTime(ctx, time.Now(), seed); err != nil {
		i.d.Log.Warn("kept agent session did not answer after the wake; making a new one", "sprite", i.spec.Name, "err", err)
		i.setAgent(nil)
		ag.Close()
		return false
	}
	return true
}

func (i *Instance) setAgent(ag *agent.Client) {
	i.mu.Lock()
	i.ag = ag
	i.mu.Unlock()
}

// Woke reports how the restore that made the instance went.
func (i *Instance) Woke() vmm.WakeSplit { return i.woke }

var _ vmm.Woken = (*Instance)(nil)
