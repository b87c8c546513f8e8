package storage

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestSyncFiles: files and folders are synced; FIFOs, links to them and
// sockets are passed over, without blocking on the FIFO.
func TestSyncFiles(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sleep"), 0o700)
	if err := os.WriteFile(filepath.Join(dir, "sleep", "state"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Symlink(fifo, filepath.Join(dir, "link"))
	if err := os.WriteFile(filepath.Join(dir, "disk.img"), []byte("d"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	done := make(chan error, 1)
	go func() { done <- SyncFiles(dir, filepath.Join(dir, "sleep")) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("SyncFiles hangs (opened the FIFO?)")
	}
	if err := SyncFiles(filepath.Join(dir, "missing")); err == nil {
		t.Error("SyncFiles of a missing folder succeeded")
	}
	if err := SyncFiles(filepath.Join(dir, "link")); err == nil {
		t.Error("SyncFiles followed a link")
	}
}
