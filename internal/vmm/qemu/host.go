package qemu

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// HostInfo is what this host offers the QEMU backend.
type HostInfo struct {
	Binary   string   `json:"binary"`
	Version  string   `json:"version"`
	KVM      bool     `json:"kvm"`        // hardware KVM usable
	KVMWhy   string   `json:"kvm_reason"` // why KVM is or is not used
	Accel    string   `json:"accel"`      // what Start will use
	Sandbox  bool     `json:"sandbox"`    // -sandbox supported
	TSCKHz   int      `json:"tsc_khz"`    // the host CPU rate, for TCG guests
	Problems []string `json:"problems,omitempty"`
}

// DetectKVM reports whether hardware KVM is usable: /dev/kvm opens
// read-write and the CPU has VT-x or AMD-V. A /dev/kvm without them (PVM,
// nested setups that only offer paravirtual KVM) cannot run a stock kernel.
func DetectKVM() (bool, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, "/dev/kvm not usable: " + err.Error()
	}
	f.Close()
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false, "cannot read /proc/cpuinfo: " + err.Error()
	}
	for _, line := range strings.Split(string(cpuinfo), "\n") {
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if f == "vmx" || f == "svm" {
				return true, "/dev/kvm usable and the CPU has " + f
			}
		}
		break
	}
	return false, "/dev/kvm exists but the CPU has neither vmx nor svm (paravirtual KVM such as PVM cannot boot a stock kernel)"
}

// Detect inspects the host for the QEMU backend.
func Detect(binary string) HostInfo {
	h := HostInfo{Binary: binary}
	path, err := exec.LookPath(binary)
	if err != nil {
		h.Problems = append(h.Problems, binary+" not found: install Debian's qemu-system-x86 (make deps)")
	} else {
		h.Binary = path
		out, err := exec.Command(path, "--version").Output()
		if err == nil {
			h.Version = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
		}
		help, _ := exec.Command(path, "-sandbox", "help").CombinedOutput()
		h.Sandbox = !bytes.Contains(help, []byte("invalid option")) && !bytes.Contains(help, []byte("not supported"))
	}
	h.KVM, h.KVMWhy = DetectKVM()
	h.TSCKHz = hostTSCKHz()
	h.Accel = "tcg"
	if h.KVM {
		h.Accel = "kvm"
	}
	return h
}

// hostTSCKHz reads the host CPU's rate from /proc/cpuinfo (0 if unknown).
func hostTSCKHz() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0
			}
			return int(mhz * 1000)
		}
	}
	return 0
}
