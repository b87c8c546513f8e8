package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSessionsTTY: wisp attach on a terminal to a terminal session
// replays its screen, takes the keyboard, and Ctrl-\ detaches (exit 0)
// leaving the session running; a second attach finishes it.
func TestSessionsTTY(t *testing.T) {
	for _, b := range backends() {
		t.Run(b, func(t *testing.T) { testSessionsTTY(t, b) })
	}
}

// terminal is `wisp attach` run on a pseudo-terminal of the test's.
type terminal struct {
	cmd    *exec.Cmd
	master *os.File
	mu     sync.Mutex
	out    bytes.Buffer
}

func (d *daemon) attachOnTerminal(t *testing.T, name, id string) *terminal {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	unix.IoctlSetWinsize(int(m.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 30, Col: 90})
	tty, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	term := &terminal{master: m, cmd: exec.Command(filepath.Join(binDir, "wisp"), "attach", name, id)}
	term.cmd.Env = append(os.Environ(), "WISP_SOCKET="+d.sock)
	term.cmd.Stdin, term.cmd.Stdout, term.cmd.Stderr = tty, tty, tty
	term.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := term.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { term.cmd.Process.Kill(); m.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := m.Read(buf)
			term.mu.Lock()
			term.out.Write(buf[:k])
			term.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return term
}

func (term *terminal) wait(t *testing.T, want string) {
	t.Helper()
	waitFor(t, time.Minute, "the terminal shows "+want, func() bool {
		term.mu.Lock()
		defer term.mu.Unlock()
		return strings.Contains(term.out.String(), want)
	})
}

// exit waits for wisp attach to end and returns its exit code.
func (term *terminal) exit(t *testing.T) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- term.cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(time.Minute):
		t.Fatal("wisp attach did not end")
		return -1
	}
}

func testSessionsTTY(t *testing.T, backend string) {
	d := newDaemon(t, backend)
	d.ok("create", "t1", "--idle", "never")
	id := strings.TrimSpace(d.ok("exec", "t1", "--tty", "--detach", "--", "sh", "-c",
		"echo started; read x; echo got-$x; stty size; read y; echo then-$y; exit 3"))

	first := d.attachOnTerminal(t, "t1", id)
	first.wait(t, "started")
	first.master.Write([]byte("one\r"))
	first.wait(t, "got-one")
	first.wait(t, "30 90") // the attach gave the session its terminal's size
	first.master.Write([]byte{0x1c})
	if code := first.exit(t); code != 0 {
		t.Fatalf("detach key: exit %d; terminal: %q", code, first.out.String())
	}
	first.wait(t, "detached from session")
	if s, ok := d.session("t1", id); !ok || !s.Running {
		t.Fatalf("after a detach: %+v %v", s, ok)
	}

	second := d.attachOnTerminal(t, "t1", id)
	second.wait(t, "got-one") // the screen so far, replayed
	second.master.Write([]byte("two\r"))
	second.wait(t, "then-two")
	if code := second.exit(t); code != 3 {
		t.Errorf("second attach: exit %d, want the session's 3; terminal: %q", code, second.out.String())
	}
}
