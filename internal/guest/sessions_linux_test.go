package guest

import (
	"io"
	"strings"
	"testing"

	"github.com/wisp-sh/wisp/internal/agent/proto"
)

// TestOutbuf: the kept output stays within its budget (records charged
// their overhead too), drops the oldest first, and never a record an
// attached stream has not been sent.
func TestOutbuf(t *testing.T) {
	b := outbuf{max: 1000}
	add := func(n int, keepFrom int64) bool {
		if !b.makeRoom(n+recOverhead, keepFrom) {
			return false
		}
		b.add(proto.TStdout, make([]byte, n))
		return true
	}
	for i := range 20 {
		if !add(100, b.end()) {
			t.Fatalf("record %d refused with nothing to keep", i)
		}
		if b.size > b.max {
			t.Fatalf("size %d over %d", b.size, b.max)
		}
	}
	if b.end() != 20 || len(b.recs) != 6 || b.first != 14 || b.total != 2000 {
		t.Fatalf("after 20 records of 100: first %d, %d kept, total %d", b.first, len(b.recs), b.total)
	}
	// An attached stream at record 15: 14 may go, 15 and later may not.
	if !add(100, 15) || b.first != 15 {
		t.Fatalf("first %d, want 15", b.first)
	}
	if add(100, 15) {
		t.Fatal("dropped a record the stream has not been sent")
	}
	if got := b.at(15); len(got.p) != 100 {
		t.Fatalf("at(15): %d bytes", len(got.p))
	}
	// Tiny records are bounded by their overhead.
	c := outbuf{max: 1000}
	for range 1000 {
		c.makeRoom(1+recOverhead, c.end())
		c.add(proto.TStderr, []byte{'x'})
	}
	if len(c.recs) != 1000/(1+recOverhead) {
		t.Errorf("%d one-byte records kept in 1000", len(c.recs))
	}
}

// TestShortArgv: a session's description carries at most about
// maxInfoArgv bytes of its command, so a list of MaxSessions fits in a
// frame.
func TestShortArgv(t *testing.T) {
	long := strings.Repeat("\x01", 60<<10) // 6 bytes each in JSON
	for _, argv := range [][]string{{"sh"}, {"sh", "-c", long}, {long}, {"a", long, "b"}} {
		got := shortArgv(argv)
		n := 0
		for _, a := range got {
			n += len(a)
		}
		if n > maxInfoArgv+3 || len(got) == 0 || got[0][0] != argv[0][0] {
			t.Errorf("shortArgv of %d args: %d bytes in %d args", len(argv), n, len(got))
		}
	}
	if got := shortArgv([]string{"sh", "-c", "true"}); strings.Join(got, " ") != "sh -c true" {
		t.Errorf("a short command changed: %q", got)
	}
	infos := make([]proto.SessionInfo, proto.MaxSessions)
	for i := range infos {
		infos[i] = proto.SessionInfo{ID: "0123456789ab", Argv: shortArgv([]string{"sh", "-c", long})}
	}
	if err := proto.WriteJSON(io.Discard, proto.TResponse, proto.Response{Sessions: infos}); err != nil {
		t.Errorf("a full list of long commands: %v", err)
	}
}
