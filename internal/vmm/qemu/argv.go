package qemu

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/wisp-sh/wisp/internal/vmm"
)

// Files in a sprite's folder that belong to the QEMU backend.
const (
	agentSock  = "agent.sock"
	qmpSock    = "qmp.sock"
	pidFile    = "qemu.pid"
	consoleLog = vmm.ConsoleLog // in spec.Logs(), as qemuLog
	qemuLog    = "qemu.log"
	memFile    = "memory"
	jailDir    = "jail" // QEMU's root once started: empty, root's, read-only
)

// tapFD is the descriptor QEMU finds the sprite's tap on (the first of
// exec.Cmd.ExtraFiles).
const tapFD = 3

// AgentPort is the virtio-serial port name the agent looks for.
const AgentPort = "wisp.agent"

// bootArgs is the guest kernel command line; HOST.md measured these as the
// fastest boot. Unknown key=value words reach the agent as environment.
var bootArgs = []string{
	"console=ttyS0", "panic=-1", "quiet", "tsc=reliable", "no_timer_check",
	"mitigations=off", "random.trust_cpu=on", "cryptomgr.notests",
}

// sandboxArg confines QEMU with seccomp: no obsolete syscalls, no spawning
// of processes, no resource-control calls, and no set*id calls. With -runas
// QEMU must call setuid once at start-up, after the filter is installed, so
// set*id stays allowed there; having become an unprivileged user it cannot
// regain privileges anyway.
func sandboxArg(runAs string) string {
	elevate := "deny"
	if runAs != "" {
		elevate = "allow"
	}
	return "on,obsolete=deny,elevateprivileges=" + elevate + ",spawn=deny,resourcecontrol=deny"
}

// Argv builds QEMU's arguments for spec. Under TCG the guest's TSC runs at
// the host's rate, and its calibration against the emulated PIT fails on a
// busy host (then the boot hangs), so tscKHz, when known, is handed to the
// kernel instead (d.TSCKHz).
func (d *Driver) Argv(spec vmm.Spec) []string {
	accel := d.Accel
	p := func(name string) string { return filepath.Join(spec.Dir, name) }
	cmdline := append(append([]string(nil), bootArgs...), "wisp_name="+spec.Name, fmt.Sprintf("wisp_pids=%d", spec.GuestPids()))
	if spec.MachineID != "" {
		cmdline = append(cmdline, "wisp_machine_id="+spec.MachineID)
	}
	netdev := "user,id=net0,restrict=on" // no network: a NIC that reaches nothing
	if spec.Net != nil {
		netdev = fmt.Sprintf("tap,id=net0,fd=%d", tapFD)
		cmdline = append(cmdline, "wisp_addr="+spec.Net.Address, "wisp_gw="+spec.Net.Gateway)
	}
	if accel == "tcg" && d.TSCKHz > 0 {
		cmdline = append(cmdline, fmt.Sprintf("tsc_early_khz=%d", d.TSCKHz))
	}
	a := []string{
		"-name", "wisp-" + spec.ID + ",debug-threads=on",
		"-M", "microvm,accel=" + accel + ",memory-backend=mem",
		"-smp", fmt.Sprint(spec.CPUs),
		"-m", fmt.Sprintf("%dM", spec.MemoryMiB),
		"-object", fmt.Sprintf("memory-backend-file,id=mem,size=%dM,mem-path=%s,share=on", spec.MemoryMiB, p(memFile)),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", spec.Kernel,
		"-initrd", spec.Initrd,
		"-append", strings.Join(cmdline, " "),
		"-chardev", "file,id=con,path=" + filepath.Join(spec.Logs(), consoleLog) + ",append=on",
		"-serial", "chardev:con",
		// auto-read-only=off: a save (migration) drops the disk's write
		// permission and cont takes it back; with auto-read-only QEMU
		// reopens the file by path then, which fails once it runs as RunAs.
		// werror/rerror=report: a full pool is an I/O error in the guest,
		// not a VM that pauses without a word (QEMU's default on ENOSPC).
		"-drive", "id=root,file=" + spec.Disk + ",format=raw,if=none,discard=unmap,auto-read-only=off,werror=report,rerror=report",
		"-device", "virtio-blk-device,drive=root",
		"-netdev", netdev,
		"-device", "virtio-net-device,netdev=net0,mac=" + spec.MAC,
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path=" + p(agentSock) + ",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=" + AgentPort,
		"-qmp", "unix:" + p(qmpSock) + ",server=on,wait=off",
		"-pidfile", p(pidFile),
	}
	if accel == "kvm" && d.CPUModel != "" {
		// A named model, refused at start if the host lacks a feature of
		// it: a guest saved on one host restores on another of the model.
		a = append(a, "-cpu", d.CPUModel+",enforce")
	} else if accel == "kvm" {
		a = append(a, "-cpu", "host")
	} else {
		// TCG's default model (qemu64) lacks AVX2, which programs built
		// for x86-64-v3 need (Claude Code's native binary dies of SIGILL).
		// Without ERMS and FSRM the guest kernel copies with SSE loops
		// rather than rep movsb, which TCG runs byte by byte: with them,
		// exec output is 2-3x slower. (Measured: stdout 64 MiB in 1.1-1.9 s
		// on qemu64, 2.1-3.4 s here, 4-5 s on plain max.)
		a = append(a, "-cpu", "max,-erms,-fsrm")
	}
	runAs := d.runAs(spec)
	if runAs != "" {
		a = append(a, "-runas", runAs)
	}
	if d.jailed(spec) {
		a = append(a, "-chroot", p(jailDir))
	}
	if d.Sandbox {
		a = append(a, "-sandbox", sandboxArg(runAs))
	}
	return a
}

// jailed says whether spec's QEMU is jailed: it runs as the sprite's own
// user, chrooted into an empty folder, once it has opened its files.
func (d *Driver) jailed(spec vmm.Spec) bool { return d.Jail && spec.UID > 0 }

// runAs is the -runas argument for spec: the sprite's own uid and gid
// (QEMU takes "UID:GID"), else the driver's shared user, else none.
func (d *Driver) runAs(spec vmm.Spec) string {
	if d.jailed(spec) {
		return fmt.Sprintf("%d:%d", spec.UID, spec.UID)
	}
	return d.RunAs
}
