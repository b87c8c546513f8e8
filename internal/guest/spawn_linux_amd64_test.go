package guest

import (
	"bufio"
	"errors"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// spawnOut runs argv through fastSpawn with stdout on a pipe and returns
// what it printed and its wait status. The calling thread has SIGUSR1
// blocked, so a child that starts with it blocked too shows it.
func spawnOut(t *testing.T, attr *syscall.ProcAttr, argv ...string) (string, syscall.WaitStatus, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	attr.Files = []uintptr{null.Fd(), w.Fd(), w.Fd()}
	runtime.LockOSThread()
	var set, old unix.Sigset_t
	set.Val[0] = 1 << (uint(syscall.SIGUSR1) - 1)
	unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old)
	pid, err, ok := fastSpawn(argv[0], argv, attr)
	unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	runtime.UnlockOSThread()
	w.Close()
	if !ok {
		t.Skip("the kernel has no clone3 with CLONE_CLEAR_SIGHAND")
	}
	if err != nil {
		return "", 0, err
	}
	out, _ := bufio.NewReader(r).ReadString(0)
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		t.Fatal(err)
	}
	return out, ws, nil
}

// TestFastSpawn: the child gets its argv, environment, folder, files and
// process group, starts with no signal blocked or ignored, and its exit
// status is its own; a failed exec or chdir is the spawn's error.
func TestFastSpawn(t *testing.T) {
	dir := t.TempDir()
	attr := &syscall.ProcAttr{Dir: dir, Env: []string{"FOO=bar baz"}, Sys: &syscall.SysProcAttr{Setpgid: true}}
	out, ws, err := spawnOut(t, attr, "/bin/sh", "-c", `echo "$FOO|$(pwd)|$(ps -o pgid= -p $$ | tr -d ' ')=$$"; exit 7`)
	if err != nil {
		t.Fatal(err)
	}
	if !ws.Exited() || ws.ExitStatus() != 7 {
		t.Errorf("wait status %v, want exit 7", ws)
	}
	first := strings.Split(strings.TrimSpace(out), "|")
	if len(first) != 3 || first[0] != "bar baz" || first[1] != dir {
		t.Fatalf("env and folder: %q, want bar baz|%s|...", out, dir)
	}
	if pg := strings.Split(first[2], "="); len(pg) != 2 || pg[0] != pg[1] {
		t.Errorf("process group %q: not its own", first[2])
	}
	// The signals the exec'd program starts with, read by one that
	// changes neither its mask nor what it ignores: none blocked (the
	// spawning thread blocks SIGUSR1), and ignored what this process was
	// started with ignored, as after syscall.ForkExec.
	sigs := func(out string) map[string]string {
		m := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				m[k] = strings.TrimSpace(v)
			}
		}
		return m
	}
	grep := []string{"/bin/grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"}
	out, _, err = spawnOut(t, &syscall.ProcAttr{Dir: "/"}, grep...)
	if err != nil {
		t.Fatal(err)
	}
	got := sigs(out)
	r, w, _ := os.Pipe()
	pid, err := syscall.ForkExec(grep[0], grep, &syscall.ProcAttr{Dir: "/", Files: []uintptr{0, w.Fd(), w.Fd()}})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := bufio.NewReader(r).ReadString(0)
	r.Close()
	syscall.Wait4(pid, nil, 0, nil)
	want := sigs(ref)
	if strings.Trim(got["SigBlk"], "0") != "" || got["SigIgn"] != want["SigIgn"] || len(got) != 2 {
		t.Errorf("signals of the spawned program %v, want none blocked and ignored as after ForkExec %v", got, want)
	}

	if _, _, err := spawnOut(t, &syscall.ProcAttr{Dir: dir}, dir+"/missing"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("exec of a missing file: %v, want ENOENT", err)
	}
	if _, _, err := spawnOut(t, &syscall.ProcAttr{Dir: dir + "/nodir"}, "/bin/true"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("chdir to a missing folder: %v, want ENOENT", err)
	}

	// The failed children are reaped.
	if pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil); err != syscall.ECHILD {
		t.Errorf("after the failed spawns: wait4 = %d, %v; want no child left", pid, err)
	}

	if os.Getuid() == 0 {
		attr := &syscall.ProcAttr{Dir: "/", Sys: &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{65534, 27}}}}
		out, _, err := spawnOut(t, attr, "/bin/sh", "-c", "id -u; id -g; id -G")
		if err != nil || out != "65534\n65534\n65534 27\n" {
			t.Errorf("credentials: %q, %v", out, err)
		}
	}
}

// TestFastSpawnable: what the fast path does not do goes to ForkExec.
func TestFastSpawnable(t *testing.T) {
	files := []uintptr{5, 6, 7}
	for _, tc := range []struct {
		name string
		attr *syscall.ProcAttr
		want bool
	}{
		{"pipes and a group", &syscall.ProcAttr{Dir: "/", Files: files, Sys: &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{}}}, true},
		{"terminal", &syscall.ProcAttr{Dir: "/", Files: files, Sys: &syscall.SysProcAttr{Setsid: true, Setctty: true}}, true},
		{"no folder", &syscall.ProcAttr{Files: files}, false},
		{"a file among 0-2", &syscall.ProcAttr{Dir: "/", Files: []uintptr{5, 1, 7}}, false},
		{"four files", &syscall.ProcAttr{Dir: "/", Files: []uintptr{5, 6, 7, 8}}, false},
		{"chroot", &syscall.ProcAttr{Dir: "/", Files: files, Sys: &syscall.SysProcAttr{Chroot: "/x"}}, false},
		{"parent death signal", &syscall.ProcAttr{Dir: "/", Files: files, Sys: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}}, false},
		{"no setgroups", &syscall.ProcAttr{Dir: "/", Files: files, Sys: &syscall.SysProcAttr{Credential: &syscall.Credential{NoSetGroups: true}}}, false},
	} {
		if got := fastSpawnable(tc.attr); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// BenchmarkSpawn: spawn and reap a program, through the fast path and
// through syscall.ForkExec. Under gVisor (copy the test binary into a
// sprite: go test -c) the difference is the ~70 system calls of Go's
// child; on a host it is a few microseconds.
func BenchmarkSpawn(b *testing.B) {
	prog := os.Getenv("SPAWN_PROG")
	if prog == "" {
		prog = "/bin/true"
	}
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	attr := &syscall.ProcAttr{Dir: "/", Files: []uintptr{null.Fd(), null.Fd(), null.Fd()}, Sys: &syscall.SysProcAttr{Setpgid: true}}
	for _, bc := range []struct {
		name  string
		spawn func() (int, error)
	}{
		{"fast", func() (int, error) { pid, err, _ := fastSpawn(prog, []string{prog}, attr); return pid, err }},
		{"ForkExec", func() (int, error) { return syscall.ForkExec(prog, []string{prog}, attr) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				pid, err := bc.spawn()
				if err != nil {
					b.Fatal(err)
				}
				var ws syscall.WaitStatus
				syscall.Wait4(pid, &ws, 0, nil)
			}
		})
	}
}
