package proto

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	var b bytes.Buffer
	for _, p := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("a"), MaxFrame)} {
		if err := WriteFrame(&b, TStdout, p); err != nil {
			t.Fatal(err)
		}
		typ, got, err := ReadFrame(&b, MaxFrame)
		if err != nil || typ != TStdout || !bytes.Equal(got, p) {
			t.Fatalf("round trip of %d bytes: type %d, %d bytes, %v", len(p), typ, len(got), err)
		}
	}
}

func TestFrameBounds(t *testing.T) {
	if err := WriteFrame(io.Discard, TData, make([]byte, MaxFrame+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized write: %v", err)
	}
	var b bytes.Buffer
	WriteFrame(&b, TData, make([]byte, 100))
	if _, _, err := ReadFrame(&b, 99); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("read over the bound: %v", err)
	}
	// A header announcing 4 GiB must fail at once, without allocating.
	if _, _, err := ReadFrame(bytes.NewReader([]byte{TData, 0xff, 0xff, 0xff, 0xff}), 0); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("4 GiB header: %v", err)
	}
	if _, _, err := ReadFrame(bytes.NewReader([]byte{99, 0, 0, 0, 0}), 0); err == nil {
		t.Error("unknown frame type accepted")
	}
	if _, _, err := ReadFrame(bytes.NewReader([]byte{TData, 0, 0, 0, 9, 1}), 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated payload: %v", err)
	}
}

func TestScanLine(t *testing.T) {
	junk := "\x00\xffWISP-READY zz\nyamux-bytes WISP-READY 0123456789abcdef\nrest"
	r := strings.NewReader(junk)
	p, n, err := ScanLine(r, 1<<10, nil, Ready)
	if err != nil || p != Ready || n != "0123456789abcdef" {
		t.Fatalf("ScanLine = %q %q %v", p, n, err)
	}
	if rest, _ := io.ReadAll(r); string(rest) != "rest" {
		t.Errorf("ScanLine consumed past the line: rest %q", rest)
	}
	if _, _, err := ScanLine(strings.NewReader(strings.Repeat("x", 100)), 50, nil, Ready); err == nil {
		t.Error("ScanLine did not stop at its bound")
	}
	if _, _, err := ScanLine(strings.NewReader(""), 50, nil, Ready); !errors.Is(err, io.EOF) {
		t.Errorf("ScanLine at EOF: %v", err)
	}
}

// FuzzReadFrame feeds the host-side decoder what a hostile guest could send.
func FuzzReadFrame(f *testing.F) {
	var b bytes.Buffer
	WriteJSON(&b, TExit, Exit{Code: 3})
	WriteFrame(&b, TStdout, []byte("hello"))
	f.Add(b.Bytes(), 64)
	f.Add([]byte{TData, 0xff, 0xff, 0xff, 0xff}, 1024)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		r := bytes.NewReader(data)
		for {
			typ, p, err := ReadFrame(r, max)
			if err != nil {
				return
			}
			bound := max
			if bound <= 0 || bound > MaxFrame {
				bound = MaxFrame
			}
			if len(p) > bound || typ < TRequest || typ > TEnd {
				t.Fatalf("frame type %d with %d bytes passed bound %d", typ, len(p), bound)
			}
			var e Exit
			DecodeJSON(p, &e)
			var resp Response
			DecodeJSON(p, &resp)
		}
	})
}

// FuzzScanLine feeds the handshake scanner arbitrary bytes.
func FuzzScanLine(f *testing.F) {
	f.Add([]byte("WISP-READY 0123456789abcdef\n"))
	f.Add([]byte("\nWISP-HELLO 0123456789abcdeX\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, n, err := ScanLine(bytes.NewReader(data), 1<<16, nil, Ready, Hello)
		if err == nil && (len(n) != NonceLen || !isHex(n)) {
			t.Fatalf("bad nonce %q accepted", n)
		}
	})
}
