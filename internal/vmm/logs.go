package vmm

import (
	"io"
	"os"
)

// LogFSSize bounds the logs of one sprite (its console, its VMM's
// output) at write time: they live in a tmpfs of this size, so a guest
// that writes without end meets ENOSPC, whoever writes for it (QEMU's
// serial, runsc's stdio) and whether or not the daemon runs. The daemon
// cuts the files down to their tails as they grow (sprite.boundLogs).
const LogFSSize = 4 << 20

// Tail returns at most the last n bytes of the file at path, reading
// only those (a log may be large; it is never read whole).
func Tail(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(fi.Size()-n, 0)
	return io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
}
