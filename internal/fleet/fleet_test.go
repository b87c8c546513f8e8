package fleet

import (
	"strings"
	"testing"

	"github.com/wisp-sh/wisp/internal/blob"
)

// WISP_FAILPOINT arms only the named points and refuses a name it does
// not know (a typo must not run a test without its crash).
func TestFailpoint(t *testing.T) {
	for _, tc := range []struct {
		env         string
		hook, wrong bool
	}{
		{env: ""},
		{env: "publish-after-chunks", hook: true},
		{env: "publish-after-manifest"},
		{env: "publish-after-everything", wrong: true},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv("WISP_FAILPOINT", tc.env)
			store := blob.New(nil, "", nil)
			f, err := New(Config{DataDir: t.TempDir()}, nil, nil, store)
			if tc.wrong {
				if err == nil || !strings.Contains(err.Error(), "WISP_FAILPOINT") {
					t.Fatalf("New with WISP_FAILPOINT=%q: %v, want it refused", tc.env, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.failpoint != tc.env || (store.BeforeManifest != nil) != tc.hook {
				t.Fatalf("failpoint %q, manifest hook %v; want %q, %v", f.failpoint, store.BeforeManifest != nil, tc.env, tc.hook)
			}
		})
	}
}

// A sleeping sprite's memory wakes only where every fact it was saved
// with matches.
func TestIncompatible(t *testing.T) {
	f := &Fleet{cfg: Config{Compat: map[string]map[string]string{
		"gvisor": {"cpu": "c1", "runsc": "r1"},
		"qemu":   {"cpu": "c1", "qemu": "7.2", "accel": "tcg"},
	}}}
	for _, tc := range []struct {
		backend string
		want    map[string]string
		why     string
	}{
		{"gvisor", map[string]string{"cpu": "c1", "runsc": "r1"}, ""},
		{"gvisor", nil, ""},
		{"gvisor", map[string]string{"cpu": "c2", "runsc": "r1"}, `its memory needs cpu "c2", this host has "c1"`},
		{"qemu", map[string]string{"cpu": "c1", "qemu": "8.0", "accel": "tcg"}, `its memory needs qemu "8.0", this host has "7.2"`},
		{"qemu", map[string]string{"accel": "kvm"}, `its memory needs accel "kvm", this host has "tcg"`},
		{"other", map[string]string{"cpu": "c1"}, `its memory needs cpu "c1", this host has ""`},
	} {
		if got := f.incompatible(tc.backend, tc.want); got != tc.why {
			t.Errorf("incompatible(%s, %v) = %q, want %q", tc.backend, tc.want, got, tc.why)
		}
	}
}
