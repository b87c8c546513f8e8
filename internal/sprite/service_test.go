package sprite

import (
	"context"
	"errors"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/vmm"
	"github.com/wisp-sh/wisp/internal/vmm/vmmtest"
)

func TestValidateService(t *testing.T) {
	rec := Sprite{Name: "web", Services: []Service{{Name: "app", Cmd: "npm start", Port: 3000}}}
	for _, tc := range []struct {
		sv   Service
		kind error // nil: valid
		want string
	}{
		{sv: Service{Name: "worker", Cmd: "./w", Dir: "/srv", Env: []string{"A=1", "B_2="}, Port: 8080}},
		{sv: Service{Name: "a_b-1", Cmd: "x"}},
		{sv: Service{Name: "Bad", Cmd: "x"}, kind: errdefs.ErrInvalid, want: "invalid service name"},
		{sv: Service{Name: "a/b", Cmd: "x"}, kind: errdefs.ErrInvalid, want: "invalid service name"},
		{sv: Service{Name: strings.Repeat("a", 33), Cmd: "x"}, kind: errdefs.ErrInvalid, want: "invalid service name"},
		{sv: Service{Name: "w", Cmd: "  "}, kind: errdefs.ErrInvalid, want: "--cmd"},
		{sv: Service{Name: "w", Cmd: "a\x00b"}, kind: errdefs.ErrInvalid, want: "--cmd"},
		{sv: Service{Name: "w", Cmd: strings.Repeat("x", maxServiceCmd+1)}, kind: errdefs.ErrInvalid, want: "--cmd"},
		{sv: Service{Name: "w", Cmd: "x", Dir: "rel"}, kind: errdefs.ErrInvalid, want: "absolute"},
		{sv: Service{Name: "w", Cmd: "x", Env: []string{"=1"}}, kind: errdefs.ErrInvalid, want: "KEY=VALUE"},
		{sv: Service{Name: "w", Cmd: "x", Env: []string{"NOVALUE"}}, kind: errdefs.ErrInvalid, want: "KEY=VALUE"},
		{sv: Service{Name: "w", Cmd: "x", User: "root;x"}, kind: errdefs.ErrInvalid, want: "invalid user"},
		{sv: Service{Name: "w", Cmd: "x", Port: 65536}, kind: errdefs.ErrInvalid, want: "out of range"},
		{sv: Service{Name: "w", Cmd: "x", Port: -1}, kind: errdefs.ErrInvalid, want: "out of range"},
		{sv: Service{Name: "app", Cmd: "x"}, kind: errdefs.ErrExists, want: "already has a service"},
		{sv: Service{Name: "w", Cmd: "x", Port: 3000}, kind: errdefs.ErrExists, want: "already has port 3000"},
	} {
		err := validateService(rec, tc.sv)
		if tc.kind == nil {
			if err != nil {
				t.Errorf("%+v: %v", tc.sv, err)
			}
			continue
		}
		if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %v mentioning %q", tc.sv, err, tc.kind, tc.want)
		}
	}
	full := Sprite{Name: "full"}
	for i := range MaxServices {
		full.Services = append(full.Services, Service{Name: "s" + strings.Repeat("x", i), Cmd: "x"})
	}
	if err := validateService(full, Service{Name: "one", Cmd: "x"}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("service %d: %v", MaxServices+1, err)
	}
}

func TestURLPort(t *testing.T) {
	for _, tc := range []struct {
		svcs []Service
		want int
	}{
		{nil, 8080},
		{[]Service{{Name: "w"}}, 8080},
		{[]Service{{Name: "w"}, {Name: "a", Port: 3000}, {Name: "b", Port: 4000}}, 3000},
	} {
		if got := (Sprite{Services: tc.svcs}).URLPort(); got != tc.want {
			t.Errorf("URLPort of %+v = %d, want %d", tc.svcs, got, tc.want)
		}
	}
}

// fakeGuest is a guest agent that answers OpServices: it records each set
// it is given on boot and answers every service running, or fails when
// fail says so.
type fakeGuest struct {
	mu    sync.Mutex
	boots [][][]string // per boot, the service names of each push
	fail  bool
}

func (g *fakeGuest) pushes() [][][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.boots)
}

// boot makes the agent of one boot.
func (g *fakeGuest) boot(t *testing.T) *agent.Client {
	g.mu.Lock()
	g.boots = append(g.boots, [][]string{})
	b := len(g.boots) - 1
	g.mu.Unlock()
	host, guest := net.Pipe()
	go func() {
		_, nonce, err := proto.ScanLine(guest, 1<<20, nil, proto.Hello)
		if err != nil {
			return
		}
		guest.Write([]byte(proto.Ready + nonce + "\n"))
		if _, _, err := proto.ScanLine(guest, 1<<20, nil, proto.Go); err != nil {
			return
		}
		sess, err := yamux.Server(guest, agent.Config())
		if err != nil {
			return
		}
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				var req proto.Request
				if proto.ReadJSON(st, proto.TRequest, proto.MaxFrame, &req) != nil {
					return
				}
				var resp proto.Response
				g.mu.Lock()
				switch {
				case req.Op != proto.OpServices:
				case g.fail:
					resp.Error, resp.Kind = "no", proto.KindInternal
				default:
					var names []string
					for _, d := range req.Services {
						names = append(names, d.Name)
						resp.Services = append(resp.Services, proto.ServiceState{Name: d.Name, State: proto.ServiceRunning, Pid: 7})
					}
					g.boots[b] = append(g.boots[b], names)
				}
				g.mu.Unlock()
				proto.WriteJSON(st, proto.TResponse, resp)
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := agent.Connect(ctx, host, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestServicesPushed: the guest is given the services when one is added
// or removed and after every boot (start, a start by a use, a disk-only
// restore), none on a boot without services; the record is written before
// the guest is told, so a push that fails is made good at the next boot;
// rm does not boot a stopped sprite, add does.
func TestServicesPushed(t *testing.T) {
	g := &fakeGuest{}
	var starts atomic.Int32
	d := &vmmtest.FullDriver{}
	d.StartFunc = func(context.Context, vmm.Spec) (vmm.Instance, error) {
		starts.Add(1)
		i := vmmtest.NewInstance()
		i.Client = g.boot(t)
		return i, nil
	}
	m := newManager(t, t.TempDir(), &d.Driver)
	m.opt.Drivers["fake"] = d
	defer m.Close()
	ctx := context.Background()
	want := func(what string, boots ...[][]string) {
		t.Helper()
		if got := g.pushes(); !reflect.DeepEqual(got, boots) {
			t.Fatalf("%s: pushes per boot %q, want %q", what, got, boots)
		}
	}
	if _, err := m.Create(ctx, CreateOptions{Name: "a", IdleSeconds: -1}); err != nil {
		t.Fatal(err)
	}
	want("create", [][]string{})
	if st, err := m.AddService(ctx, "a", Service{Name: "web", Cmd: "httpd", Port: 3000}); err != nil || st.State != "running" || st.Port != 3000 {
		t.Fatalf("add: %+v %v", st, err)
	}
	want("add", [][]string{{"web"}})
	if _, err := m.AddService(ctx, "a", Service{Name: "web", Cmd: "x"}); !errors.Is(err, errdefs.ErrExists) {
		t.Errorf("second add of web: %v", err)
	}
	m.Stop(ctx, "a")
	m.Start(ctx, "a")
	want("stop+start", [][]string{{"web"}}, [][]string{{"web"}})
	m.Stop(ctx, "a")
	if _, err := m.CreateCheckpoint(ctx, "a", "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Restore(ctx, "a", "v1"); err != nil {
		t.Fatal(err)
	}
	want("disk restore", [][]string{{"web"}}, [][]string{{"web"}}, [][]string{{"web"}})

	// Recorded before the guest is told.
	g.mu.Lock()
	g.fail = true
	g.mu.Unlock()
	if _, err := m.AddService(ctx, "a", Service{Name: "worker", Cmd: "w"}); err == nil {
		t.Errorf("add with a guest that refuses: no error")
	}
	if sp, _ := m.Get("a"); len(sp.Services) != 2 {
		t.Errorf("record after a failed push: %+v", sp.Services)
	}
	if l, _ := m.Services(ctx, "a"); len(l) != 2 || l[1].State != "unknown" || l[1].Error == "" {
		t.Errorf("list while the guest refuses: %+v", l)
	}
	g.mu.Lock()
	g.fail = false
	g.mu.Unlock()
	m.Stop(ctx, "a")
	n := starts.Load()
	if err := m.RemoveService(ctx, "a", "web"); err != nil {
		t.Fatal(err)
	}
	if sp, _ := m.Get("a"); sp.State != Stopped || starts.Load() != n || len(sp.Services) != 1 {
		t.Errorf("rm on a stopped sprite: %s, %d boots, services %+v", sp.State, starts.Load()-n, sp.Services)
	}
	// A use (an exec) starts it; the boot gives the guest what the record says.
	if _, release, err := m.Agent(ctx, "a"); err != nil {
		t.Fatal(err)
	} else {
		release()
	}
	got := g.pushes()
	if last := got[len(got)-1]; !reflect.DeepEqual(last, [][]string{{"worker"}}) {
		t.Errorf("boot by a use: pushes %q", last)
	}
	if err := m.RemoveService(ctx, "a", "worker"); err != nil {
		t.Fatal(err)
	}
	got = g.pushes()
	if last := got[len(got)-1]; !reflect.DeepEqual(last, [][]string{{"worker"}, nil}) {
		t.Errorf("rm on a running sprite: pushes %q", last)
	}
	if err := m.RemoveService(ctx, "a", "worker"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("rm of a removed service: %v", err)
	}
}
