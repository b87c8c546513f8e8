package agent

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/wisp-sh/wisp/internal/agent/proto"
)

// SetServices makes defs the guest's services (the whole set: the guest
// stops the ones not named, starts new or changed ones and leaves the
// others running) and returns the state of each, in the order of defs.
func (c *Client) SetServices(ctx context.Context, defs []proto.Service) ([]proto.ServiceState, error) {
	r, err := c.call(ctx, proto.Request{Op: proto.OpServices, Services: defs})
	if err != nil {
		return nil, err
	}
	if len(r.Services) != len(defs) {
		return nil, fmt.Errorf("%w: %d service states for %d services", ErrAgent, len(r.Services), len(defs))
	}
	return r.Services, nil
}

// ServiceLogs copies the output the guest kept of service name to w (at
// most proto.ServiceLogKeep bytes).
func (c *Client) ServiceLogs(ctx context.Context, name string, w io.Writer) error {
	s, err := c.Open(ctx, proto.Request{Op: proto.OpServiceLogs, Path: name})
	if err != nil {
		return err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { s.SetDeadline(time.Now()) })
	defer stop()
	if _, err := s.Response(); err != nil {
		return err
	}
	var n int
	for {
		t, p, err := s.ReadFrame()
		if err != nil {
			return fmt.Errorf("%w: service logs: %w", ErrAgent, err)
		}
		switch t {
		case proto.TEnd:
			return nil
		case proto.TData:
			if n += len(p); n > proto.ServiceLogKeep {
				return fmt.Errorf("%w: service logs: more than %d bytes", ErrAgent, proto.ServiceLogKeep)
			}
			if _, err := w.Write(p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: service logs: frame type %d", ErrAgent, t)
		}
	}
}
