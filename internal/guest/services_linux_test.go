package guest

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent/proto"
)

func TestRing(t *testing.T) {
	r := ring{buf: make([]byte, 10)}
	var all bytes.Buffer
	for i := range 50 {
		p := []byte(strings.Repeat(strconv.Itoa(i%10), i%13))
		r.Write(p)
		all.Write(p)
		want := all.Bytes()
		if len(want) > 10 {
			want = want[len(want)-10:]
		}
		if got := r.snapshot(); !bytes.Equal(got, want) || r.written() != int64(all.Len()) {
			t.Fatalf("after %d writes: %q (written %d), want %q (%d)", i+1, got, r.written(), want, all.Len())
		}
	}
}

// waitUntil polls cond for up to limit.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", limit, what)
		}
	}
}

// TestServicesSupervised: a service that ends is started again after
// the backoff, with its output kept; an unchanged definition keeps its
// process; rm (a set without it) ends its whole process group; bad sets
// are refused.
func TestServicesSupervised(t *testing.T) {
	s := &Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Reaper: NewReaper()}
	dir := t.TempDir()
	bg := dir + "/bg.pid"
	flaky := proto.Service{Name: "flaky", Cmd: "echo run-$X; exit 3", Env: []string{"X=1"}, Dir: dir}
	steady := proto.Service{Name: "steady", Cmd: "sleep 1000 & echo $! > " + bg + "; sleep 1000"}
	st, err := s.setServices([]proto.Service{flaky, steady})
	if err != nil || len(st) != 2 || st[1].State != proto.ServiceRunning || st[1].Pid == 0 {
		t.Fatalf("set: %+v %v", st, err)
	}
	steadyPid := st[1].Pid
	waitUntil(t, 10*time.Second, "flaky restarted twice", func() bool {
		st, _ := s.setServices([]proto.Service{flaky, steady})
		return st[0].Restarts >= 2 && st[0].LastExit == "exit 3" && st[1].Pid == steadyPid
	})
	var logs bytes.Buffer
	s.serviceLogs(&frames{w: &logs}, "flaky")
	if !strings.Contains(logs.String(), "run-1\nrun-1\n") {
		t.Errorf("flaky's logs: %q", logs.String())
	}
	b, err := os.ReadFile(bg)
	bgPid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || bgPid == 0 || syscall.Kill(bgPid, 0) != nil {
		t.Fatalf("steady's background child: %q %v", b, err)
	}
	t0 := time.Now()
	if st, err := s.setServices([]proto.Service{flaky}); err != nil || len(st) != 1 {
		t.Fatalf("rm steady: %+v %v", st, err)
	}
	if took := time.Since(t0); took >= stopGrace {
		t.Errorf("stopping a service that takes TERM took %s", took)
	}
	for _, pid := range []int{steadyPid, bgPid} {
		waitUntil(t, 5*time.Second, fmt.Sprintf("process %d of the removed service gone", pid), func() bool {
			return syscall.Kill(pid, 0) != nil
		})
	}
	for _, bad := range [][]proto.Service{{{Name: "a"}}, {{Cmd: "true"}}, {{Name: "a", Cmd: "true"}, {Name: "a", Cmd: "true"}}} {
		if _, err := s.setServices(bad); err == nil {
			t.Errorf("set %+v: no error", bad)
		}
	}
	if st, _ := s.setServices([]proto.Service{flaky}); len(st) != 1 {
		t.Errorf("a refused set changed the services: %+v", st)
	}
	s.stopServices()
}

// frames collects the TData payloads a writer of frames sends.
type frames struct {
	w   io.Writer
	buf []byte
}

func (f *frames) Write(p []byte) (int, error) {
	f.buf = append(f.buf, p...)
	for len(f.buf) >= 5 {
		n := int(f.buf[1])<<24 | int(f.buf[2])<<16 | int(f.buf[3])<<8 | int(f.buf[4])
		if len(f.buf) < 5+n {
			break
		}
		if f.buf[0] == proto.TData {
			f.w.Write(f.buf[5 : 5+n])
		}
		f.buf = f.buf[5+n:]
	}
	return len(p), nil
}
