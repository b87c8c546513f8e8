package guest

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/fsfreeze"
)

func guestInfo() (proto.Info, error) {
	var info proto.Info
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		info.Kernel = string(bytes.TrimRight(uts.Release[:], "\x00"))
		info.Hostname = string(bytes.TrimRight(uts.Nodename[:], "\x00"))
	}
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			info.Uptime, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 2 {
				continue
			}
			kb, _ := strconv.ParseUint(fs[1], 10, 64)
			switch fs[0] {
			case "MemTotal:":
				info.MemTotal = kb << 10
			case "MemAvailable:":
				info.MemAvailable = kb << 10
			}
		}
		f.Close()
	}
	info.Time = time.Now()
	return info, nil
}

func syncFS() { unix.Sync() }

// setTime sets the clock and mixes seed into the kernel's entropy pool
// (writing to /dev/urandom mixes without crediting).
func setTime(t time.Time, seed []byte) error {
	if !t.IsZero() {
		tv := unix.NsecToTimeval(t.UnixNano())
		// gVisor has no settimeofday; its clock follows the host's.
		if err := unix.Settimeofday(&tv); err != nil && !errors.Is(err, unix.ENOSYS) {
			return err
		}
	}
	if len(seed) > 0 {
		if err := os.WriteFile("/dev/urandom", seed, 0); err != nil {
			return err
		}
	}
	return nil
}

// freezeRoot freezes the root filesystem (FIFREEZE): dirty data is written
// and writers wait until thawRoot.
func freezeRoot() error {
	f, err := os.Open("/")
	if err != nil {
		return err
	}
	defer f.Close()
	return fsfreeze.Freeze(int(f.Fd()))
}

func thawRoot() error {
	f, err := os.Open("/")
	if err != nil {
		return err
	}
	defer f.Close()
	return fsfreeze.Thaw(int(f.Fd()))
}

// setIdentity makes a forked sprite its own: hostname, machine-id, fresh
// randomness, the right time.
func setIdentity(req proto.Request) error {
	if req.Hostname != "" {
		if err := SetHostname(req.Hostname); err != nil {
			return err
		}
	}
	if req.MachineID != "" {
		if err := os.WriteFile("/etc/machine-id", []byte(req.MachineID+"\n"), 0o444); err != nil {
			return err
		}
	}
	if req.MAC != "" {
		if err := setMAC("eth0", req.MAC); err != nil {
			return err
		}
	}
	if req.Address != "" {
		if err := ConfigureNetwork(req.Address, req.Gateway); err != nil {
			return err
		}
	}
	return setTime(req.Time, req.Seed)
}

// SetIdentity sets the hostname and machine-id where given.
func SetIdentity(hostname, machineID string) error {
	return setIdentity(proto.Request{Hostname: hostname, MachineID: machineID})
}
