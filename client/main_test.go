package client_test

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// TestMain starts a real wispd for the examples when WISP_BIN names a
// directory with its binaries (make test sets it): they run against it,
// with WISP_SOCKET pointing there. Without WISP_BIN the examples are
// skipped, with a note; with it, a daemon that cannot start fails the run.
func TestMain(m *testing.M) {
	flag.Parse()
	bin := os.Getenv("WISP_BIN")
	if bin == "" || testing.Short() {
		fmt.Fprintln(os.Stderr, "client: examples skipped: they drive a real wispd (set WISP_BIN, as make test does)")
		flag.Set("test.skip", "^Example")
		os.Exit(m.Run())
	}
	stop, err := startDaemon(bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "client: start wispd for the examples:", err)
		os.Exit(1)
	}
	code := m.Run()
	stop()
	os.Exit(code)
}
