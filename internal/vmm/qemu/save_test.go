package qemu

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/vmm"
)

func TestStateCompatible(t *testing.T) {
	spec := vmm.Spec{ID: "abc", Name: "dev", Dir: "/d", CPUs: 2, MemoryMiB: 512, Disk: "/d/disk", Kernel: "/k", Initrd: "/i", MAC: "52:54:00:00:00:01"}
	d := &Driver{Accel: "tcg"}
	good := d.newState(spec, qemuVersion{7, 2, 22}, "")
	if good.Machine != "microvm,accel=tcg,memory-backend=mem" || strings.Join(good.Devices, " ") != "virtio-blk-device virtio-net-device virtio-serial-device virtserialport" {
		t.Fatalf("state = %+v", good)
	}
	for _, tc := range []struct {
		name   string
		change func(*savedState)
		want   string // in the error; empty: compatible
	}{
		{"same", func(*savedState) {}, ""},
		{"memory copy", func(s *savedState) { s.Memory = "memory" }, ""},
		{"accel", func(s *savedState) { s.Accel = "kvm" }, "saved under kvm"},
		{"memory size", func(s *savedState) { s.MemoryMiB = 256 }, "256 MiB"},
		{"cpus", func(s *savedState) { s.CPUs = 1 }, "1 CPUs"},
		{"devices", func(s *savedState) { s.Devices = s.Devices[1:] }, "devices"},
		{"machine", func(s *savedState) { s.Machine = "q35" }, `"q35"`},
		{"device escapes", func(s *savedState) { s.Device = "../x" }, "bad file names"},
		{"memory escapes", func(s *savedState) { s.Memory = "/etc/passwd" }, "bad file names"},
	} {
		st := good
		st.Devices = append([]string(nil), good.Devices...)
		tc.change(&st)
		err := d.compatible(st, spec)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	fork := vmm.Spec{ID: "def", Name: "fork", Dir: "/e", CPUs: 2, MemoryMiB: 512, Disk: "/e/disk", Kernel: "/k2", Initrd: "/i2", MAC: "52:54:00:00:00:02"}
	if err := d.compatible(good, fork); err != nil {
		t.Errorf("restore into another sprite of the same shape: %v", err)
	}
}

func TestSameSeries(t *testing.T) {
	for _, tc := range []struct {
		saved string
		ok    bool
	}{{"7.2.22", true}, {"7.2.1", true}, {"8.2.0", false}, {"7.1.0", false}, {"", false}, {"x", false}} {
		if err := sameSeries(tc.saved, qemuVersion{7, 2, 22}); (err == nil) != tc.ok {
			t.Errorf("sameSeries(%q, 7.2.22) = %v", tc.saved, err)
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, err := readState(dir); err == nil {
		t.Fatal("readState of an empty folder succeeded")
	}
	st := (&Driver{Accel: "tcg"}).newState(vmm.Spec{CPUs: 1, MemoryMiB: 256}, qemuVersion{7, 2, 22}, memFile)
	if err := writeState(dir, st); err != nil {
		t.Fatal(err)
	}
	got, err := readState(dir)
	if err != nil || got.QEMU != "7.2.22" || got.Memory != memFile || got.Device != deviceFile || !got.Saved.Equal(st.Saved) {
		t.Fatalf("readState = %+v, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile+".tmp")); !os.IsNotExist(err) {
		t.Errorf("temporary state file left: %v", err)
	}
	os.WriteFile(filepath.Join(dir, stateFile), []byte("{"), 0o600)
	if _, err := readState(dir); err == nil {
		t.Error("readState of a torn file succeeded")
	}
}

// TestMonitor runs the QMP client against a scripted server: greeting,
// capabilities, events between commands, errors, a passed descriptor.
func TestMonitor(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	gotFd := make(chan bool, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		uc := c.(*net.UnixConn)
		c.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}` + "\n"))
		br := bufio.NewReader(c)
		br.ReadString('\n')
		c.Write([]byte(`{"return": {}}` + "\n"))
		// getfd: read with room for a descriptor (bypassing br, empty now).
		buf, oob := make([]byte, 4096), make([]byte, 64)
		_, oobn, _, _, _ := uc.ReadMsgUnix(buf, oob)
		gotFd <- oobn > 0
		c.Write([]byte(`{"timestamp": {}, "event": "STOP"}` + "\n" + `{"return": {}}` + "\n"))
		br.ReadString('\n')
		c.Write([]byte(`{"error": {"class": "GenericError", "desc": "no such thing"}}` + "\n"))
		br.ReadString('\n')
		c.Write([]byte(`{"return": {"status": "completed"}}` + "\n"))
		br.ReadString('\n') // then silence
		time.Sleep(time.Second)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := dialMonitor(ctx, sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.version.String() != "7.2.22" {
		t.Errorf("version %s", m.version)
	}
	f, _ := os.Open(os.DevNull)
	defer f.Close()
	if _, err := m.run(ctx, "getfd", map[string]string{"fdname": "x"}, f); err != nil || !<-gotFd {
		t.Fatalf("getfd: %v", err)
	}
	if _, err := m.run(ctx, "bogus", nil, nil); err == nil || !strings.Contains(err.Error(), "no such thing") {
		t.Errorf("error response: %v", err)
	}
	if err := m.waitMigration(ctx); err != nil {
		t.Errorf("waitMigration: %v", err)
	}
	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if _, err := m.run(short, "stop", nil, nil); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("silent monitor: %v, want a deadline error", err)
	}
}
