package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/wisp-sh/wisp/client"
)

// execFlags are what `exec` and `console` ask for.
type execFlags struct {
	argv      []string
	env       []string
	dir, user string
	tty       bool
	detach    bool          // start a session, print its id, do not attach
	maxRun    time.Duration // with detach: how long it runs with no client (0: until it ends)
}

func newExec(e *env) *cobra.Command {
	var req execFlags
	c := &cobra.Command{
		Use:   "exec NAME [flags] -- CMD [ARGS...]",
		Short: "Run a command in a sprite",
		Long: `Run a command in a sprite. Stdin is streamed in, stdout and stderr come
out separately, and the command's exit code becomes wisp's (128+N when
it dies of signal N; 127 when it does not exist). The command ends when
wisp does.

With --detach the command is a session that runs on by itself (its stdin
empty): wisp prints its id and returns. wisp attach NAME ID shows what it printed (the
last 1 MiB) and follows it; wisp sessions NAME lists the sessions. Sessions
survive a restart of wispd and a sleep of the sprite, and keep it awake.`,
		Example: `  wisp exec dev -- uname -a
  echo hello | wisp exec dev -- sh -c 'cat > /tmp/x'
  wisp exec dev --tty -- bash
  wisp exec dev --detach -- make -C /home/sprite/app test`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if at := cmd.ArgsLenAtDash(); at != -1 && at != 1 {
				return fmt.Errorf("usage: wisp exec NAME [flags] -- CMD [ARGS...]")
			}
			req.argv = args[1:]
			for _, kv := range req.env {
				if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
					return fmt.Errorf("--env %q: want KEY=VALUE", kv)
				}
			}
			if req.maxRun != 0 && !req.detach {
				return fmt.Errorf("--max-run goes with --detach")
			}
			if req.detach {
				return runDetached(cmd.Context(), e, args[0], req)
			}
			return runInteractive(cmd.Context(), e, args[0], req)
		},
	}
	f := c.Flags()
	f.BoolVarP(&req.detach, "detach", "d", false, "start the command as a session, print its id and return (see wisp attach)")
	f.DurationVar(&req.maxRun, "max-run", 0, "with --detach: end the session this long after its last client went (default: when it ends)")
	f.BoolVarP(&req.tty, "tty", "t", false, "run on a pseudo-terminal (interactive programs)")
	f.StringVarP(&req.dir, "dir", "w", "", "working directory (default: the user's home)")
	f.StringArrayVarP(&req.env, "env", "e", nil, "set an environment variable KEY=VALUE (repeatable)")
	f.StringVarP(&req.user, "user", "u", "", "run as this user (default: sprite, or root where there is none)")
	return c
}

func newConsole(e *env) *cobra.Command {
	var user string
	return &cobra.Command{
		Use:   "console NAME",
		Short: "Open an interactive login shell in a sprite",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := execFlags{argv: []string{"/bin/sh", "-c", `exec "${SHELL:-/bin/sh}" -l`}, tty: true, user: user}
			return runInteractive(cmd.Context(), e, args[0], req)
		},
	}
}

// runDetached starts req as a session of its own (no stdin) and prints
// its id.
func runDetached(ctx context.Context, e *env, name string, req execFlags) error {
	cmd := e.client().Sprite(name).CommandContext(ctx, req.argv[0], req.argv[1:]...)
	cmd.Env, cmd.Dir, cmd.User, cmd.TTY = req.env, req.dir, req.user, req.tty
	cmd.Detachable, cmd.MaxRunAfterDisconnect = true, req.maxRun
	if err := cmd.Start(); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, cmd.SessionID())
	return cmd.Detach()
}

// runInteractive runs req in the sprite wired to the terminal and returns
// an exitError carrying the command's exit code. An interrupt ends the
// command (a terminal in raw mode sends ^C to it as a byte instead).
func runInteractive(ctx context.Context, e *env, name string, req execFlags) error {
	cmd := e.client().Sprite(name).CommandContext(ctx, req.argv[0], req.argv[1:]...)
	cmd.Env, cmd.Dir, cmd.User, cmd.TTY = req.env, req.dir, req.user, req.tty
	cmd.Stdin, cmd.Stdout, cmd.Stderr = e.stdin, e.stdout, e.stderr
	stdinFile, isFile := e.stdin.(*os.File)
	if req.tty && isFile && term.IsTerminal(int(stdinFile.Fd())) {
		fd := int(stdinFile.Fd())
		if w, h, err := term.GetSize(fd); err == nil {
			cmd.Cols, cmd.Rows = w, h
		}
		old, err := term.MakeRaw(fd)
		if err != nil {
			return err
		}
		defer term.Restore(fd, old)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	// Window size changes follow the terminal.
	if req.tty && isFile {
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if w, h, err := term.GetSize(int(stdinFile.Fd())); err == nil {
					cmd.Resize(w, h)
				}
			}
		}()
	}
	err := cmd.Wait()
	var ee *client.ExitError
	if errors.As(err, &ee) {
		return exitError{ee.Code}
	}
	if err != nil && ctx.Err() != nil {
		return exitError{130} // interrupted: the command was ended with the connection
	}
	return err
}
