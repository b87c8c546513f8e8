package agent

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/wisp-sh/wisp/internal/agent/proto"
)

// FuzzSessionStream feeds the host's reader of a session stream what a
// hostile guest could send: a response, then output frames. Whatever it
// accepts is well formed.
func FuzzSessionStream(f *testing.F) {
	var seed bytes.Buffer
	proto.WriteJSON(&seed, proto.TResponse, proto.Response{Sessions: []proto.SessionInfo{{ID: "0123456789ab", Argv: []string{"sh"}, Exit: &proto.Exit{Code: 3}}}})
	proto.WriteFrame(&seed, proto.TStdout, []byte("out"))
	proto.WriteFrame(&seed, proto.TStderr, []byte("err"))
	proto.WriteJSON(&seed, proto.TExit, proto.Exit{Code: 137, Signal: "SIGKILL"})
	f.Add(seed.Bytes(), 1)
	f.Add([]byte{proto.TEnd, 0, 0, 0, 0}, -1)
	f.Fuzz(func(t *testing.T, data []byte, want int) {
		br := bufio.NewReader(bytes.NewReader(data))
		var r proto.Response
		if proto.ReadJSON(br, proto.TResponse, maxResponse, &r) == nil {
			want = max(min(want, 2), -1)
			if checkSessions(r.Sessions, want, "") == nil {
				if len(r.Sessions) > proto.MaxSessions || want >= 0 && len(r.Sessions) != want {
					t.Fatalf("accepted %d sessions, want %d", len(r.Sessions), want)
				}
				for _, s := range r.Sessions {
					if !proto.ValidSessionID(s.ID) || len(s.Argv) == 0 || s.Exit != nil && (s.Exit.Code < 0 || s.Exit.Code > 255) {
						t.Fatalf("accepted %+v", s)
					}
				}
			}
		}
		var out, errb bytes.Buffer
		read := func() (byte, []byte, error) { return proto.ReadFrame(br, proto.MaxFrame) }
		e, err := copySession(func() (byte, []byte, proto.Exit, error) { return nextOutput(read) }, &out, &errb)
		if err == nil && (e.Code < 0 || e.Code > 255) {
			t.Fatalf("accepted exit %+v", e)
		}
		if out.Len()+errb.Len() > len(data) {
			t.Fatalf("%d bytes of output from %d of input", out.Len()+errb.Len(), len(data))
		}
	})
}
