package cli

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// printable returns guest-controlled text (a sprite's last error, console
// tails in error messages) safe to print on a terminal: control
// characters other than newline and tab (C0, DEL, C1: so no escape
// sequence gets through), bidirectional overrides and invalid UTF-8 are
// shown as escapes (\x1b, \u202e) instead of acting on the terminal.
func printable(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r < 0xa0, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[:n])
		}
		s = s[n:]
	}
	return b.String()
}

// sanitizer is printable for a stream: it holds back the bytes of a
// character split between two writes.
type sanitizer struct {
	w    io.Writer
	tail []byte
}

func (s *sanitizer) Write(p []byte) (int, error) {
	buf := append(s.tail, p...)
	// Keep an incomplete last character for the next write.
	cut := len(buf)
	for i := len(buf) - 1; i >= 0 && i >= len(buf)-utf8.UTFMax; i-- {
		if utf8.RuneStart(buf[i]) {
			if !utf8.FullRune(buf[i:]) {
				cut = i
			}
			break
		}
	}
	s.tail = append([]byte(nil), buf[cut:]...)
	_, err := io.WriteString(s.w, printable(string(buf[:cut])))
	return len(p), err
}

// Flush writes what is held back.
func (s *sanitizer) Flush() error {
	if len(s.tail) == 0 {
		return nil
	}
	_, err := io.WriteString(s.w, printable(string(s.tail)))
	s.tail = nil
	return err
}
