package config

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	if c := Default(); c.Validate() != nil {
		t.Fatalf("defaults do not validate: %v", c.Validate())
	}
	if c := Default(); func() error { c.HTTPAddr = ""; return c.Validate() }() != nil {
		t.Errorf("no front door (--http-addr '') does not validate")
	}
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.DataDir = "relative" }, "must be absolute"},
		{func(c *Config) { c.Backend = "docker" }, "want auto, qemu or gvisor"},
		{func(c *Config) { c.CPUs = 0 }, "default cpus"},
		{func(c *Config) { c.MemoryMiB = 64 }, "default memory"},
		{func(c *Config) { c.DiskGiB = 0 }, "default disk"},
		{func(c *Config) { c.PoolGiB = 0 }, "pool size"},
		{func(c *Config) { c.Idle = -1 }, "idle"},
		{func(c *Config) { c.Socket = "" }, "socket"},
		{func(c *Config) { c.HTTPAddr = "7780" }, "http addr"},
		{func(c *Config) { c.URLWait = 0 }, "url wait"},
	} {
		c := Default()
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error mentioning %q", err, tc.want)
		}
	}
}

func TestVMMUIDs(t *testing.T) {
	for _, tc := range []struct {
		in           string
		first, count int
		ok           bool
	}{
		{DefaultVMMUIDs, 2000000000, 65536, true},
		{"100000-100009", 100000, 10, true},
		{"5-10", 0, 0, false},                  // system users
		{"100000-100000", 0, 0, false},         // one uid: no room beside the builder's
		{"100000", 0, 0, false},                // not a range
		{"2147483000-2147483647", 0, 0, false}, // past 2^31-2
		{"x-y", 0, 0, false},
	} {
		c := Default()
		c.VMMUIDs = tc.in
		first, count, err := c.UIDRange()
		if (err == nil) != tc.ok || first != tc.first || count != tc.count {
			t.Errorf("%q: %d %d %v, want %d %d ok=%v", tc.in, first, count, err, tc.first, tc.count, tc.ok)
		}
		if verr := c.Validate(); (verr == nil) != tc.ok && tc.ok {
			t.Errorf("%q: Validate %v", tc.in, verr)
		}
	}
}
