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
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/client"
)

// detachKey detaches `wisp attach` from a terminal session (Ctrl-\).
const detachKey = 0x1c

func newSessions(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "sessions NAME",
		Short: "List a sprite's exec sessions (wisp exec --detach starts one)",
		Long: `List a sprite's exec sessions: commands started with wisp exec --detach
(and plain execs while they run). A session runs on without a client;
wisp attach NAME ID follows it, wisp sessions kill NAME ID ends it. A
session that ended stays listed, with its exit code, until a client has
seen its end (or for 10 minutes).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := e.client().Sprite(args[0]).Sessions(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, list)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tSTARTED\tCOMMAND")
			for _, s := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", printable(s.ID), sessionState(s), s.Started.Local().Format(time.DateTime),
					printable(oneLine(strings.Join(s.Command, " "), 60)))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")

	var signal string
	kill := &cobra.Command{
		Use:   "kill NAME ID",
		Short: "End a session (TERM, then KILL after 3 s, to its process group)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			sp := e.client().Sprite(args[0])
			if signal != "" {
				return sp.SignalSession(cmd.Context(), args[1], signal)
			}
			return sp.KillSession(cmd.Context(), args[1])
		},
	}
	kill.Flags().StringVarP(&signal, "signal", "s", "", "only send this signal (INT, HUP, ...); the session stays")
	c.AddCommand(kill)
	return c
}

func sessionState(s api.Session) string {
	switch {
	case !s.Running && s.ExitCode != nil:
		return fmt.Sprintf("exited %d", *s.ExitCode)
	case !s.Running:
		return "exited"
	case s.Attached:
		return "attached"
	}
	return "running"
}

func newAttach(e *env) *cobra.Command {
	var stdin bool
	c := &cobra.Command{
		Use:   "attach NAME ID",
		Short: "Attach to a session: replay what it printed, then follow it",
		Long: `Attach to an exec session (wisp sessions NAME lists them): print what it
printed that the sprite kept (its last 1 MiB of output), then follow it
until it ends; wisp exits with its exit code. A client attached before is
detached. Ctrl-C (Ctrl-\ in a terminal session) detaches, leaving the
session running. A terminal session takes the keyboard; another takes
stdin with --stdin.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAttach(cmd.Context(), e, args[0], args[1], stdin)
		},
	}
	c.Flags().BoolVar(&stdin, "stdin", false, "send stdin to the session (a session started with stdin)")
	return c
}

func runAttach(ctx context.Context, e *env, name, id string, withStdin bool) error {
	sp := e.client().Sprite(name)
	list, err := sp.Sessions(ctx)
	if err != nil {
		return err
	}
	var tty bool
	found := false
	for _, s := range list {
		if s.ID == id {
			tty, found = s.TTY, true
		}
	}
	if !found {
		return fmt.Errorf("no session %q in sprite %q (wisp sessions %s lists them)", id, name, name)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := sp.Attach(ctx, id)
	cmd.Stdout, cmd.Stderr = e.stdout, e.stderr
	stdinFile, isFile := e.stdin.(*os.File)
	raw := tty && isFile && term.IsTerminal(int(stdinFile.Fd()))
	if raw {
		fd := int(stdinFile.Fd())
		if w, h, err := term.GetSize(fd); err == nil {
			cmd.Cols, cmd.Rows = w, h
		}
		old, err := term.MakeRaw(fd)
		if err != nil {
			return err
		}
		defer term.Restore(fd, old)
		cmd.Stdin = &detachReader{r: e.stdin, detach: cancel}
	} else if withStdin || tty {
		cmd.Stdin = e.stdin
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	if raw {
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
	err = cmd.Wait()
	var ee *client.ExitError
	switch {
	case errors.As(err, &ee):
		return exitError{ee.Code}
	case err != nil && ctx.Err() != nil:
		fmt.Fprintf(e.stderr, "\r\nwisp: detached from session %s (it runs on: wisp attach %s %s)\r\n", id, name, id)
		return nil
	}
	return err
}

// detachReader passes stdin through until the detach key, then calls
// detach and ends.
type detachReader struct {
	r      io.Reader
	detach func()
}

func (d *detachReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	for i := range n {
		if p[i] == detachKey {
			d.detach()
			return i, io.EOF
		}
	}
	return n, err
}
