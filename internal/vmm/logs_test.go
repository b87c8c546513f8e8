package vmm

import (
	"os"
	"path/filepath"
	"testing"
)

// TestTail: the tail of a huge (sparse) log is read without reading the
// log: os.ReadFile of 64 GiB would not return.
func TestTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 30); err != nil {
		t.Skip("no sparse files here:", err)
	}
	f.WriteAt([]byte("last words\n"), 64<<30)
	f.Close()
	got, err := Tail(p, 11)
	if err != nil || string(got) != "last words\n" {
		t.Fatalf("Tail = %q, %v", got, err)
	}
	if got, err := Tail(p, 1500); err != nil || len(got) != 1500 {
		t.Fatalf("Tail 1500 = %d bytes, %v", len(got), err)
	}
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("abc"), 0o644)
	if got, err := Tail(short, 1500); err != nil || string(got) != "abc" {
		t.Fatalf("Tail of a short file = %q, %v", got, err)
	}
}
