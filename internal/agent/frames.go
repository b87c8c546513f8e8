package agent

import (
	"encoding/binary"
	"io"
)

// maxCoalesce is the largest data frame body that FrameWriter sends in
// one write with its header; a larger one amortizes its second write.
const maxCoalesce = 64 << 10

// FrameWriter returns rwc with its writes of yamux data frames whole: one
// write of header and body instead of yamux's two (its send loop writes a
// frame's 12-byte header, then its body). Under gVisor every write is a
// system call of the sandbox's, and the peer may wake for each part: an
// exec's answer and exit were two each. rwc must be written by yamux's
// send loop only (one goroutine, a header then its body), which is how a
// session uses it.
func FrameWriter(rwc io.ReadWriteCloser) io.ReadWriteCloser {
	return &frameWriter{ReadWriteCloser: rwc}
}

type frameWriter struct {
	io.ReadWriteCloser
	hdr  [yamuxHeaderSize]byte
	held bool   // hdr is a data frame's header waiting for its body
	buf  []byte // header and body, reused
}

func (f *frameWriter) Write(p []byte) (int, error) {
	if f.held {
		// p is the body of the held header.
		f.held = false
		f.buf = append(append(f.buf[:0], f.hdr[:]...), p...)
		n, err := f.ReadWriteCloser.Write(f.buf)
		if cap(f.buf) > 2*maxCoalesce {
			f.buf = nil
		}
		return max(n-yamuxHeaderSize, 0), err
	}
	if len(p) == yamuxHeaderSize && p[1] == yamuxData {
		if n := binary.BigEndian.Uint32(p[8:12]); n > 0 && n <= maxCoalesce {
			copy(f.hdr[:], p) // yamux reuses its header buffers
			f.held = true
			return len(p), nil
		}
	}
	return f.ReadWriteCloser.Write(p)
}
