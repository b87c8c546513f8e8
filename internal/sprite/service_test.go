package sprite

import (
	"errors"
	"strings"
	"testing"

	"github.com/wisp-sh/wisp/internal/errdefs"
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
