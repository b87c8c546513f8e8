package integration

import (
	"strings"
	"testing"

	"github.com/wisp-sh/wisp/internal/vmm/qemu"
)

// TestTCGOptIn: on a host without hardware KVM, QEMU (emulation, not a
// security boundary) is refused unless wispd runs with --allow-tcg, and
// the refusal names the flag.
func TestTCGOptIn(t *testing.T) {
	if kvm, _ := qemu.DetectKVM(); kvm {
		t.Skip("hardware KVM here: QEMU needs no opt-in")
	}
	d := newDaemon(t, "gvisor", "--allow-tcg=false")
	_, stderr, code := d.wisp(nil, "create", "emu", "--backend", "qemu")
	if code == 0 || !strings.Contains(stderr, "--allow-tcg") {
		t.Errorf("create --backend qemu without --allow-tcg: exit %d, %q; want a refusal naming --allow-tcg", code, stderr)
	}
	if out := d.ok("doctor"); !strings.Contains(out, "gvisor") {
		t.Errorf("doctor: %q", out)
	}
}
