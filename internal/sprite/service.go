package sprite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

// A service is a long-running process of a sprite that its guest agent
// supervises (restarts it when it ends, keeps its output). Its definition
// is part of the sprite's record, written before the guest is told; the
// Manager gives the guest the whole list after every boot (a cold start, a
// restore, a fork) and whenever it changes. A sleep keeps them running.

// Service is the definition of one service.
type Service struct {
	Name string   `json:"name"`
	Cmd  string   `json:"cmd"`            // run as /bin/sh -c CMD
	Dir  string   `json:"dir,omitempty"`  // working directory; default the user's home
	Env  []string `json:"env,omitempty"`  // KEY=VALUE
	User string   `json:"user,omitempty"` // default "sprite"
	// Port is what the service listens on: the sprite's URL serves the
	// first service's port that is set, instead of 8080.
	Port      int       `json:"port,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// ServiceStatus is a service's definition and, when its sprite runs, the
// state the agent reports.
type ServiceStatus struct {
	Service
	// State is proto.ServiceRunning, ServiceBackoff or ServiceExited, or
	// "unknown" when the agent did not answer; when the sprite does not
	// run, its state ("stopped", "sleeping").
	State     string    `json:"state"`
	Pid       int       `json:"pid,omitempty"`
	Restarts  int       `json:"restarts"`
	StartedAt time.Time `json:"started_at,omitzero"`
	LastExit  string    `json:"last_exit,omitempty"`
	LogBytes  int64     `json:"log_bytes"` // output written in all; the last 256 KiB are kept
	Error     string    `json:"error,omitempty"`
}

// Bounds of service definitions.
const (
	MaxServices   = 32
	maxServiceCmd = 8 << 10
	maxServiceEnv = 64
)

var (
	serviceNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,30}[a-z0-9])?$`)
	envRE         = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
)

// URLPort is the port the sprite's URL serves by default: the port of its
// first service that has one, else 8080.
func (s Sprite) URLPort() int {
	for _, sv := range s.Services {
		if sv.Port > 0 {
			return sv.Port
		}
	}
	return DefaultURLPort
}

// DefaultURLPort is the port a sprite's URL serves when no service names one.
const DefaultURLPort = 8080

func (s Sprite) service(name string) (Service, bool) {
	i := slices.IndexFunc(s.Services, func(sv Service) bool { return sv.Name == name })
	if i < 0 {
		return Service{}, false
	}
	return s.Services[i], true
}

func invalidService(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), errdefs.ErrInvalid)
}

// validateService checks a definition against itself and the sprite's
// other services.
func validateService(rec Sprite, sv Service) error {
	var errs []error
	if !serviceNameRE.MatchString(sv.Name) {
		errs = append(errs, invalidService("invalid service name %q: use 1-32 lower-case letters, digits, hyphens and underscores, starting and ending with a letter or digit", sv.Name))
	}
	if strings.TrimSpace(sv.Cmd) == "" || len(sv.Cmd) > maxServiceCmd || strings.ContainsRune(sv.Cmd, 0) {
		errs = append(errs, invalidService("service %q: --cmd must be a command of 1 to %d bytes without NUL", sv.Name, maxServiceCmd))
	}
	if sv.Dir != "" && (!path.IsAbs(sv.Dir) || strings.ContainsRune(sv.Dir, 0)) {
		errs = append(errs, invalidService("service %q: --dir %q must be an absolute path", sv.Name, sv.Dir))
	}
	if len(sv.Env) > maxServiceEnv {
		errs = append(errs, invalidService("service %q: %d --env, at most %d", sv.Name, len(sv.Env), maxServiceEnv))
	}
	for _, kv := range sv.Env {
		if !envRE.MatchString(kv) || strings.ContainsRune(kv, 0) || len(kv) > maxServiceCmd {
			errs = append(errs, invalidService("service %q: --env %q: want KEY=VALUE", sv.Name, kv))
		}
	}
	if sv.User != "" && !serviceNameRE.MatchString(sv.User) {
		errs = append(errs, invalidService("service %q: invalid user %q", sv.Name, sv.User))
	}
	if sv.Port < 0 || sv.Port > 65535 {
		errs = append(errs, invalidService("service %q: port %d out of range 1-65535", sv.Name, sv.Port))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if _, ok := rec.service(sv.Name); ok {
		return errdefs.WithHint(fmt.Errorf("sprite %q already has a service %q: %w", rec.Name, sv.Name, errdefs.ErrExists),
			"remove it first: `wisp service rm "+rec.Name+" "+sv.Name+"`")
	}
	for _, o := range rec.Services {
		if sv.Port != 0 && o.Port == sv.Port {
			return fmt.Errorf("service %q of sprite %q already has port %d: %w", o.Name, rec.Name, sv.Port, errdefs.ErrExists)
		}
	}
	if len(rec.Services) >= MaxServices {
		return fmt.Errorf("sprite %q has %d services, the most it may have: %w", rec.Name, len(rec.Services), errdefs.ErrInvalid)
	}
	return nil
}

func notFoundService(name, svc string) error {
	return errdefs.WithHint(fmt.Errorf("sprite %q has no service %q: %w", name, svc, errdefs.ErrNotFound),
		"see `wisp service list "+name+"`")
}

func (sv Service) proto() proto.Service {
	return proto.Service{Name: sv.Name, Cmd: sv.Cmd, Dir: sv.Dir, Env: sv.Env, User: sv.User, Port: sv.Port}
}

// pushTimeout bounds telling the guest its services (stopping one takes
// up to 6 s).
const pushTimeout = 30 * time.Second

// pushServices gives e's running guest the record's services and returns
// their states (under e.op). fresh says the guest has just booted from
// disk and so runs none: with no services there is nothing to say.
func (m *Manager) pushServices(ctx context.Context, e *entry, fresh bool) ([]ServiceStatus, error) {
	m.mu.Lock()
	rec, inst := e.rec, e.inst
	m.mu.Unlock()
	if fresh && len(rec.Services) == 0 {
		return nil, nil
	}
	if rec.State != Running || inst == nil || inst.Agent() == nil {
		return nil, stateError("run the services of", rec)
	}
	defs := make([]proto.Service, len(rec.Services))
	for i, sv := range rec.Services {
		defs[i] = sv.proto()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pushTimeout)
	defer cancel()
	states, err := inst.Agent().SetServices(ctx, defs)
	if err != nil {
		return nil, fmt.Errorf("give sprite %q its services: %w", rec.Name, err)
	}
	out := make([]ServiceStatus, len(rec.Services))
	for i, sv := range rec.Services {
		st := states[i]
		out[i] = ServiceStatus{Service: sv, State: st.State, Pid: st.Pid, Restarts: st.Restarts, StartedAt: st.StartedAt, LastExit: st.LastExit, LogBytes: st.LogBytes}
	}
	return out, nil
}

// afterBoot gives a guest that has just come up its services; a failure
// is logged, not returned: the sprite runs, and `wisp service list` tells
// them again.
func (m *Manager) afterBoot(ctx context.Context, e *entry, fresh bool) {
	if _, err := m.pushServices(ctx, e, fresh); err != nil {
		m.log.Warn("services", LogSprite, e.rec.Name, LogErr, err)
	}
}

// AddService records a service of the sprite and starts it. Like any use,
// it starts a stopped sprite (and wakes a sleeping one).
func (m *Manager) AddService(ctx context.Context, name string, sv Service) (ServiceStatus, error) {
	e, release, err := m.hold(name)
	if err != nil {
		return ServiceStatus{}, err
	}
	defer release()
	m.mu.Lock()
	rec := e.rec
	m.mu.Unlock()
	sv.CreatedAt = time.Now().UTC().Truncate(time.Second)
	if err := validateService(rec, sv); err != nil {
		return ServiceStatus{}, err
	}
	if _, _, err := m.ready(ctx, e, true); err != nil {
		return ServiceStatus{}, err
	}
	var out ServiceStatus
	err = m.withOp(e, func() error {
		rec := e.rec
		if err := validateService(rec, sv); err != nil { // again: another add may have won
			return err
		}
		rec.Services = append(slices.Clone(rec.Services), sv)
		if err := m.persist(e, rec); err != nil {
			return err
		}
		states, err := m.pushServices(ctx, e, false)
		if err != nil {
			return errdefs.WithHint(fmt.Errorf("service %q is recorded, but: %w", sv.Name, err), "it starts when the sprite next boots; see `wisp service list "+name+"`")
		}
		out = states[len(states)-1]
		return nil
	})
	return out, err
}

// RemoveService stops a service and forgets it. A stopped sprite stays
// stopped (it runs nothing); a sleeping one is woken to stop it.
func (m *Manager) RemoveService(ctx context.Context, name, svc string) error {
	e, release, err := m.hold(name)
	if err != nil {
		return err
	}
	defer release()
	err = m.withOp(e, func() error {
		rec := e.rec
		if _, ok := rec.service(svc); !ok {
			return notFoundService(name, svc)
		}
		rec.Services = slices.DeleteFunc(slices.Clone(rec.Services), func(s Service) bool { return s.Name == svc })
		return m.persist(e, rec)
	})
	if err != nil {
		return err
	}
	m.mu.Lock()
	st := e.rec.State
	m.mu.Unlock()
	if st == Stopped {
		return nil
	}
	if _, _, err := m.ready(ctx, e, false); err != nil {
		return fmt.Errorf("service %q is removed from the record, but the sprite could not be told: %w", svc, err)
	}
	return m.withOp(e, func() error {
		_, err := m.pushServices(ctx, e, false)
		return err
	})
}

// Services lists a sprite's services. For a running sprite it also makes
// sure the guest runs exactly these (a push that failed earlier is made
// good) and reports their state; a sprite that does not run is not started.
func (m *Manager) Services(ctx context.Context, name string) ([]ServiceStatus, error) {
	e, release, err := m.hold(name)
	if err != nil {
		return nil, err
	}
	defer release()
	var out []ServiceStatus
	m.withOp(e, func() error {
		rec := e.rec
		state, why := string(rec.State), ""
		if rec.State == Running {
			states, err := m.pushServices(ctx, e, false)
			if err == nil {
				out = states
				return nil
			}
			m.log.Warn("services", LogSprite, name, LogErr, err)
			state, why = "unknown", err.Error()
		}
		for _, sv := range rec.Services {
			out = append(out, ServiceStatus{Service: sv, State: state, Error: why})
		}
		return nil
	})
	if out == nil {
		out = []ServiceStatus{}
	}
	return out, nil
}

// ServiceLogs writes the output the guest kept of a service (its last
// 256 KiB) to w. Like any use, it starts a stopped sprite.
func (m *Manager) ServiceLogs(ctx context.Context, name, svc string, w io.Writer) error {
	rec, err := m.Record(name)
	if err != nil {
		return err
	}
	if _, ok := rec.service(svc); !ok {
		return notFoundService(name, svc)
	}
	ag, release, err := m.Agent(ctx, name)
	if err != nil {
		return err
	}
	defer release()
	return ag.ServiceLogs(ctx, svc, w)
}
