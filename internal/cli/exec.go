package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/client"
)

func newExec(e *env) *cobra.Command {
	var req proto.ExecRequest
	c := &cobra.Command{
		Use:   "exec NAME [flags] -- CMD [ARGS...]",
		Short: "Run a command in a sprite",
		Long: `Run a command in a sprite. Stdin is streamed in, stdout and stderr come
out separately, and the command's exit code becomes wisp's (128+N when
it dies of signal N; 127 when it does not exist).`,
		Example: `  wisp exec dev -- uname -a
  echo hello | wisp exec dev -- sh -c 'cat > /tmp/x'
  wisp exec dev --tty -- bash`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if at := cmd.ArgsLenAtDash(); at != -1 && at != 1 {
				return fmt.Errorf("usage: wisp exec NAME [flags] -- CMD [ARGS...]")
			}
			req.Argv = args[1:]
			for _, kv := range req.Env {
				if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
					return fmt.Errorf("--env %q: want KEY=VALUE", kv)
				}
			}
			return runInteractive(cmd.Context(), e, args[0], req)
		},
	}
	f := c.Flags()
	f.BoolVarP(&req.TTY, "tty", "t", false, "run on a pseudo-terminal (interactive programs)")
	f.StringVarP(&req.Dir, "dir", "w", "", "working directory (default: the user's home)")
	f.StringArrayVarP(&req.Env, "env", "e", nil, "set an environment variable KEY=VALUE (repeatable)")
	f.StringVarP(&req.User, "user", "u", "", "run as this user (default: sprite, or root where there is none)")
	return c
}

func newConsole(e *env) *cobra.Command {
	var user string
	return &cobra.Command{
		Use:   "console NAME",
		Short: "Open an interactive login shell in a sprite",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := proto.ExecRequest{Argv: []string{"/bin/sh", "-c", `exec "${SHELL:-/bin/sh}" -l`}, TTY: true, User: user}
			return runInteractive(cmd.Context(), e, args[0], req)
		},
	}
}

// runInteractive runs req in the sprite wired to the terminal and returns
// an exitError carrying the command's exit code.
func runInteractive(ctx context.Context, e *env, name string, req proto.ExecRequest) error {
	stdinFile, isFile := e.stdin.(*os.File)
	if req.TTY && isFile && term.IsTerminal(int(stdinFile.Fd())) {
		fd := int(stdinFile.Fd())
		if w, h, err := term.GetSize(fd); err == nil {
			req.Cols, req.Rows = uint16(w), uint16(h)
		}
		old, err := term.MakeRaw(fd)
		if err != nil {
			return err
		}
		defer term.Restore(fd, old)
	}
	st, err := e.client().Stream(ctx, name, proto.Request{Op: proto.OpExec, Exec: &req})
	if err != nil {
		return err
	}
	defer st.Close()

	// Window size changes follow the terminal.
	if req.TTY && isFile {
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if w, h, err := term.GetSize(int(stdinFile.Fd())); err == nil {
					st.WriteJSON(proto.TResize, proto.Resize{Rows: uint16(h), Cols: uint16(w)})
				}
			}
		}()
	}
	// Interrupts are forwarded to the command (a terminal in raw mode
	// sends ^C as a byte instead).
	go func() {
		<-ctx.Done()
		st.WriteJSON(proto.TSignal, proto.Signal{Name: "INT"})
	}()
	go func() {
		sendAll(st, e.stdin, proto.TStdin)
		st.WriteFrame(proto.TCloseStdin, nil)
	}()
	exit, err := readExit(st, e.stdout, e.stderr)
	if err != nil {
		return err
	}
	if exit.Error != "" {
		fmt.Fprintln(e.stderr, "wisp:", exit.Error)
	}
	if exit.Code != 0 {
		return exitError{exit.Code}
	}
	return nil
}

// sendAll sends r as frames of type t until EOF.
func sendAll(st *client.Stream, r io.Reader, t byte) error {
	buf := make([]byte, proto.ChunkSize)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := st.WriteFrame(t, buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readExit copies output frames until the exit frame.
func readExit(st *client.Stream, stdout, stderr io.Writer) (proto.Exit, error) {
	for {
		t, p, err := st.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return proto.Exit{}, errors.New("the sprite closed the session before the command exited (did it stop?)")
			}
			return proto.Exit{}, err
		}
		switch t {
		case proto.TStdout:
			stdout.Write(p)
		case proto.TStderr:
			stderr.Write(p)
		case proto.TExit:
			var x proto.Exit
			return x, proto.DecodeJSON(p, &x)
		default:
			return proto.Exit{}, fmt.Errorf("unexpected frame type %d", t)
		}
	}
}
