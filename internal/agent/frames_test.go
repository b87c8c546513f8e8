package agent

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

type writes struct {
	io.ReadWriteCloser
	got [][]byte
}

func (w *writes) Write(p []byte) (int, error) {
	w.got = append(w.got, bytes.Clone(p))
	return len(p), nil
}

func yamuxHdr(typ byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// TestFrameWriter: a data frame's header and body go out in one write;
// other frames, and bodies over maxCoalesce, as yamux wrote them.
func TestFrameWriter(t *testing.T) {
	w := &writes{}
	f := FrameWriter(w)
	body := []byte("hello")
	big := make([]byte, maxCoalesce+1)
	steps := [][]byte{
		yamuxHdr(yamuxWindow, 1<<20), // a window update: no body
		yamuxHdr(yamuxData, 5), body,
		yamuxHdr(yamuxData, 0), // a data frame without body (a flag)
		yamuxHdr(yamuxData, uint32(len(big))), big,
	}
	for _, p := range steps {
		if n, err := f.Write(p); n != len(p) || err != nil {
			t.Fatalf("write of %d bytes: %d, %v", len(p), n, err)
		}
	}
	want := [][]byte{steps[0], append(yamuxHdr(yamuxData, 5), body...), steps[3], steps[4], big}
	if len(w.got) != len(want) {
		t.Fatalf("%d writes, want %d", len(w.got), len(want))
	}
	for i := range want {
		if !bytes.Equal(w.got[i], want[i]) {
			t.Errorf("write %d: %d bytes %x..., want %d bytes", i, len(w.got[i]), w.got[i][:min(16, len(w.got[i]))], len(want[i]))
		}
	}
}
