package main

import (
	"os/exec"
	"strings"
	"testing"
)

// forbidden are the daemon's packages: the CLI drives wispd through the
// API (packages client and api) and links none of them, so it builds for
// any OS and cannot reach around the API.
var forbidden = []string{
	"internal/sprite", "internal/agent", "internal/agent/proto", "internal/image", "internal/vmm",
	"internal/storage", "internal/guest", "internal/doctor", "internal/server",
	"internal/network", // its nettest (no wisp deps) serves bench net
}

func TestCLIDeps(t *testing.T) {
	for _, goos := range []string{"linux", "darwin"} {
		cmd := exec.Command("go", "list", "-deps", ".")
		cmd.Env = append(cmd.Environ(), "GOOS="+goos, "GOARCH=arm64")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list (GOOS=%s): %v\n%s", goos, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list (GOOS=%s) listed %d packages: %q", goos, len(deps), deps)
		}
		for _, d := range deps {
			for _, f := range forbidden {
				if d == "github.com/wisp-sh/wisp/"+f || strings.HasPrefix(d, "github.com/wisp-sh/wisp/"+f+"/") && !strings.HasSuffix(d, "/nettest") {
					t.Errorf("GOOS=%s: wisp links %s", goos, d)
					break
				}
			}
		}
	}
}
