package gvisor

import (
	"slices"
	"testing"
)

// TestPlatformFlags: systrap's spinning fast path is off for a one-CPU
// sandbox (whose quota it would eat) and stays on where there are CPUs
// to spare or no quota.
func TestPlatformFlags(t *testing.T) {
	for _, tc := range []struct {
		platform string
		cpus     int
		off      bool
	}{
		{"systrap", 1, true},
		{"systrap", 2, false},
		{"systrap", 0, false},
		{"ptrace", 1, false},
	} {
		got := slices.Contains(platformFlags(tc.platform, tc.cpus), "--systrap-disable-fast-path")
		if got != tc.off {
			t.Errorf("%s, %d CPUs: fast path off %v, want %v", tc.platform, tc.cpus, got, tc.off)
		}
	}
}
