package client_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/image/imagetest"
)

// startDaemon starts wispd on a data dir of its own, on the fastest
// backend here, and sets WISP_SOCKET.
func startDaemon(bin string) (stop func(), err error) {
	if os.Getuid() != 0 {
		return nil, fmt.Errorf("wispd needs root (loop mounts, cgroups)")
	}
	tb := &mainTB{}
	fx, err := tb.run(func() imagetest.Fixture { return imagetest.Need(tb) })
	if err != nil {
		return nil, fmt.Errorf("test images: %w", err)
	}
	dir, err := os.MkdirTemp("", "wisp-examples")
	if err != nil {
		return nil, err
	}
	backend := "qemu"
	if _, err := os.Stat("/usr/local/libexec/wisp/runsc"); err == nil || os.Getenv("WISP_RUNSC") != "" {
		backend = "gvisor"
	}
	sock := filepath.Join(dir, "wisp.sock")
	pid := os.Getpid()
	cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(232 + pid%20), 0, 0}), 16)
	log, _ := os.Create(filepath.Join(dir, "wispd.log"))
	cmd := exec.Command(filepath.Join(bin, "wispd"), "--data-dir", filepath.Join(dir, "data"), "--socket", sock,
		"--backend", backend, "--default-memory", "256", "--allow-tcg", "--idle", "0s",
		"--net-name", fmt.Sprintf("wx%02d", pid%100), "--net-cidr", cidr.String(), "--dns-upstream", "127.0.0.1:9",
		"--http-addr", "127.0.0.1:0", "--default-image", "minimal", "--default-disk", "2",
		"--images", fx.Store.Dir, "--pool-size", "4")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop = func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		unmountUnder(dir) // the pool, runsc's network namespace
		os.RemoveAll(dir)
	}
	for deadline := time.Now().Add(time.Minute); ; {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			b, _ := os.ReadFile(log.Name())
			return nil, fmt.Errorf("wispd did not come up:\n%s", b)
		}
		time.Sleep(10 * time.Millisecond) // waiting for the socket to appear
	}
	os.Setenv("WISP_SOCKET", sock)
	return stop, nil
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
}

// mainTB is the testing.TB imagetest.Need gets outside a test: a failure
// (or a skip: make test must not skip the examples) ends the run with
// its message.
type mainTB struct{ testing.TB }

type tbExit struct{ msg string }

func (*mainTB) Helper()                   {}
func (*mainTB) Logf(f string, a ...any)   { fmt.Fprintf(os.Stderr, f+"\n", a...) }
func (*mainTB) Fatal(a ...any)            { panic(tbExit{fmt.Sprint(a...)}) }
func (*mainTB) Fatalf(f string, a ...any) { panic(tbExit{fmt.Sprintf(f, a...)}) }
func (*mainTB) Skip(a ...any)             { panic(tbExit{fmt.Sprint(a...)}) }
func (*mainTB) Skipf(f string, a ...any)  { panic(tbExit{fmt.Sprintf(f, a...)}) }

func (*mainTB) run(f func() imagetest.Fixture) (fx imagetest.Fixture, err error) {
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(tbExit)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("%s", e.msg)
		}
	}()
	return f(), nil
}
