package agent_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
)

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// BenchmarkExecStdout measures exec stdout through the host's session (an
// in-process agent on a unix socket, host processes): the cost of the
// host's window size, without a sandbox's noise.
func BenchmarkExecStdout(b *testing.B) {
	ln := serve(b)
	c := connect(b, ln)
	defer c.Close()
	const size = 256 << 20
	b.SetBytes(size)
	for b.Loop() {
		var out countWriter
		exit, err := c.Exec(context.Background(), proto.ExecRequest{Argv: []string{"head", "-c", "268435456", "/dev/zero"}}, agent.ExecIO{Stdout: &out, Stderr: io.Discard})
		if err != nil || exit.Code != 0 || out.n != size {
			b.Fatalf("exec: %+v %v, %d bytes", exit, err, out.n)
		}
	}
}

// BenchmarkSessionStdout is BenchmarkExecStdout through a session (what
// every exec WebSocket is): the output goes through the session's kept
// output to the attached stream.
func BenchmarkSessionStdout(b *testing.B) {
	ln := serve(b)
	c := connect(b, ln)
	defer c.Close()
	const size = 256 << 20
	b.SetBytes(size)
	for b.Loop() {
		s, err := c.StartSession(context.Background(), proto.ExecRequest{Argv: []string{"head", "-c", "268435456", "/dev/zero"}}, proto.SessionRequest{})
		if err != nil {
			b.Fatal(err)
		}
		var out countWriter
		exit, err := s.Output(&out, io.Discard)
		s.Close()
		if err != nil || exit.Code != 0 || out.n != size {
			b.Fatalf("session: %+v %v, %d bytes", exit, err, out.n)
		}
	}
}

// BenchmarkExecTrue is the round trip of a plain exec of true through an
// in-process agent (host processes): the protocol's share of an exec's
// latency, without a sandbox.
func BenchmarkExecTrue(b *testing.B) {
	ln := serve(b)
	c := connect(b, ln)
	defer c.Close()
	for b.Loop() {
		exit, err := c.Exec(context.Background(), proto.ExecRequest{Argv: []string{"true"}}, agent.ExecIO{Stdout: io.Discard, Stderr: io.Discard})
		if err != nil || exit.Code != 0 {
			b.Fatalf("exec: %+v %v", exit, err)
		}
	}
}

// BenchmarkSessionTrue is BenchmarkExecTrue through a session (what every
// exec WebSocket is).
func BenchmarkSessionTrue(b *testing.B) {
	ln := serve(b)
	c := connect(b, ln)
	defer c.Close()
	zero := time.Duration(0)
	for b.Loop() {
		s, err := c.StartSession(context.Background(), proto.ExecRequest{Argv: []string{"true"}}, proto.SessionRequest{MaxRunAfterDisconnect: &zero})
		if err != nil {
			b.Fatal(err)
		}
		exit, err := s.Output(io.Discard, io.Discard)
		s.Close()
		if err != nil || exit.Code != 0 {
			b.Fatalf("session: %+v %v", exit, err)
		}
	}
}
