package sprite

import (
	"fmt"
	"os"
	"path/filepath"
)

// A sprite's logs (its console, its VMM's output) are written by the guest
// or on its behalf, without end: they live in a tmpfs of vmm.LogFSSize
// bytes, where writes past it fail, and each second the daemon cuts a log
// that has grown past maxLog down to its last keepLog bytes. Writers
// append (O_APPEND), so they go on at the new end.
const (
	maxLog  = 1 << 20
	keepLog = 256 << 10
)

// boundLog cuts the log at path when it has grown past maxLog.
func boundLog(path string) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() <= maxLog {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	tail := make([]byte, keepLog)
	n, err := f.ReadAt(tail, fi.Size()-keepLog)
	if err != nil && n < keepLog {
		return err
	}
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "[wisp: %s was %d KiB; cut to its last %d KiB]\n%s", filepath.Base(path), fi.Size()>>10, keepLog>>10, tail)
	return err
}

// boundLogs bounds the logs of all sprites.
func (m *Manager) boundLogs() {
	for _, rec := range m.List() {
		ents, _ := os.ReadDir(m.logDir(rec))
		for _, d := range ents {
			if err := boundLog(filepath.Join(m.logDir(rec), d.Name())); err != nil {
				m.log.Warn("bound log", LogSprite, rec.Name, "log", d.Name(), LogErr, err)
			}
		}
	}
}
