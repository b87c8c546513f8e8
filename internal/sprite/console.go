package sprite

import (
	"fmt"
	"os"
)

// The console log is written by the guest, which may write without end:
// past maxConsole it is cut down to its last keepConsole bytes. Writers
// append (O_APPEND), so they go on at the new end.
const (
	maxConsole  = 8 << 20
	keepConsole = 2 << 20
)

// boundConsole cuts rec's console log when it has grown past maxConsole.
func (m *Manager) boundConsole(rec Sprite) error {
	p := m.ConsolePath(rec)
	fi, err := os.Stat(p)
	if err != nil || fi.Size() <= maxConsole {
		return nil
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	tail := make([]byte, keepConsole)
	n, err := f.ReadAt(tail, fi.Size()-keepConsole)
	if err != nil && n < keepConsole {
		return err
	}
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "[wisp: console log was %d MiB; cut to its last %d MiB]\n%s", fi.Size()>>20, keepConsole>>20, tail)
	return err
}

// boundConsoles bounds the console logs of all sprites.
func (m *Manager) boundConsoles() {
	for _, rec := range m.List() {
		if err := m.boundConsole(rec); err != nil {
			m.log.Warn("bound console log", LogSprite, rec.Name, LogErr, err)
		}
	}
}
