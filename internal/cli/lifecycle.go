package cli

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newStart(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "start NAME",
		Short: "Boot a stopped sprite",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t0 := time.Now()
			s, err := e.client().Sprite(args[0]).Start(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s %s in %s\n", s.Name, s.State, time.Since(t0).Round(time.Millisecond))
			return nil
		},
	}
}

func newStop(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "stop NAME",
		Short: "Shut a sprite down (its disk keeps everything)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := e.client().Sprite(args[0]).Stop(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s %s\n", s.Name, s.State)
			return nil
		},
	}
}

func newDestroy(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "destroy NAME",
		Short: "Remove a sprite and its disk",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := e.client().Sprite(args[0]).Destroy(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s destroyed\n", args[0])
			return nil
		},
	}
}

func newLogs(e *env) *cobra.Command {
	var tail int64
	c := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a sprite's serial console",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := e.client().Sprite(args[0]).Logs(cmd.Context(), tail)
			if err != nil {
				return err
			}
			defer rc.Close()
			return copyGuestText(e.stdout, rc)
		},
	}
	c.Flags().Int64Var(&tail, "tail-bytes", 0, "print only the last N bytes")
	return c
}

// copyGuestText copies text a guest wrote (a console, a service's output)
// to w; on a terminal through the sanitizer, so the guest's escape
// sequences stay away from the user's terminal.
func copyGuestText(w io.Writer, r io.Reader) error {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		s := &sanitizer{w: w}
		defer s.Flush()
		w = s
	}
	_, err := io.Copy(w, r)
	return err
}
