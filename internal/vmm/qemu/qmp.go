package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// maxQMPLine bounds one line QEMU sends on the monitor.
const maxQMPLine = 1 << 20

// monitor is one QMP connection. Every wait on it is bounded by the ctx of
// the call (the QMP socket serves one client at a time, so a connect can
// otherwise hang behind another client). It passes file descriptors with
// SCM_RIGHTS, which the go-qemu library only does when QEMU offers "oob".
type monitor struct {
	conn    *net.UnixConn
	sc      *bufio.Scanner
	version qemuVersion // from the greeting
}

type qemuVersion struct {
	Major int `json:"major"`
	Minor int `json:"minor"`
	Micro int `json:"micro"`
}

func (v qemuVersion) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro) }

// dialMonitor connects to the QMP socket at path and negotiates
// capabilities. While the socket does not exist yet (QEMU is starting) it
// retries until ctx ends or exited is closed.
func dialMonitor(ctx context.Context, path string, exited <-chan struct{}) (*monitor, error) {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			m := &monitor{conn: c.(*net.UnixConn), sc: bufio.NewScanner(c)}
			m.sc.Buffer(make([]byte, 0, 64<<10), maxQMPLine)
			if err := m.handshake(ctx); err != nil {
				c.Close()
				return nil, err
			}
			return m, nil
		}
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ECONNREFUSED) {
			return nil, fmt.Errorf("qmp: %w", err)
		}
		select {
		case <-exited:
			return nil, errors.New("qmp: QEMU exited")
		case <-ctx.Done():
			return nil, fmt.Errorf("qmp: connect %s: %w", path, context.Cause(ctx))
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func (m *monitor) handshake(ctx context.Context) error {
	var greeting struct {
		QMP struct {
			Version struct {
				QEMU qemuVersion `json:"qemu"`
			} `json:"version"`
		} `json:"QMP"`
	}
	undo := m.bound(ctx)
	err := m.read(ctx, &greeting)
	undo()
	if err != nil {
		return fmt.Errorf("qmp greeting: %w", err)
	}
	m.version = greeting.QMP.Version.QEMU
	_, err = m.run(ctx, "qmp_capabilities", nil, nil)
	return err
}

// bound makes the connection's reads and writes fail when ctx ends.
func (m *monitor) bound(ctx context.Context) (undo func()) {
	if dl, ok := ctx.Deadline(); ok {
		m.conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { m.conn.SetDeadline(time.Now()) })
	return func() { stop(); m.conn.SetDeadline(time.Time{}) }
}

func (m *monitor) read(ctx context.Context, v any) error {
	if !m.sc.Scan() {
		err := m.sc.Err()
		if err == nil {
			err = errors.New("monitor closed")
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Deadlines come only from ctx (bound), which ends at the
			// same moment; say why it ended.
			select {
			case <-ctx.Done():
				err = fmt.Errorf("%w (%w)", context.Cause(ctx), err)
			case <-time.After(100 * time.Millisecond):
			}
		}
		return err
	}
	return json.Unmarshal(m.sc.Bytes(), v)
}

// run executes one command and returns its "return" value, skipping
// events. When f is not nil its descriptor travels with the command.
func (m *monitor) run(ctx context.Context, cmd string, args any, f *os.File) (json.RawMessage, error) {
	defer m.bound(ctx)()
	b, err := json.Marshal(struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
	}{cmd, args})
	if err != nil {
		return nil, err
	}
	var oob []byte
	if f != nil {
		oob = unix.UnixRights(int(f.Fd()))
	}
	_, _, err = m.conn.WriteMsgUnix(append(b, '\n'), oob, nil)
	runtime.KeepAlive(f)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		var r struct {
			Event  string          `json:"event"`
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
		}
		if err := m.read(ctx, &r); err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		switch {
		case r.Event != "":
			continue
		case r.Error != nil:
			return nil, fmt.Errorf("qmp %s: %s: %s", cmd, r.Error.Class, r.Error.Desc)
		}
		return r.Return, nil
	}
}

func (m *monitor) Close() error { return m.conn.Close() }

// migrationStatus is the part of query-migrate's answer we use.
type migrationStatus struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
}

// waitMigration polls query-migrate until the migration has completed
// (nil), failed or was cancelled (error), or ctx ends.
func (m *monitor) waitMigration(ctx context.Context) error {
	for {
		raw, err := m.run(ctx, "query-migrate", nil, nil)
		if err != nil {
			return err
		}
		var st migrationStatus
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("query-migrate: %w", err)
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migration still %q: %w", st.Status, context.Cause(ctx))
		case <-time.After(time.Millisecond):
		}
	}
}
