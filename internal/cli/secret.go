package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newSecret(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "secret",
		Short: "Set, list and remove a sprite's secrets (environment variables never shown)",
		Long: `A secret is an environment variable every exec and console in the sprite gets.
Its value is stored by the daemon in a file only root can read and is never
logged or shown by info, list or the API; only its name is.`,
	}
	var file string
	set := &cobra.Command{
		Use:   "set NAME KEY",
		Short: "Set a secret from stdin (one trailing newline dropped) or --file",
		Example: `  wisp secret set dev ANTHROPIC_API_KEY            # type or paste it; not echoed
  printf %s "$KEY" | wisp secret set dev ANTHROPIC_API_KEY
  wisp secret set dev GH_TOKEN --file ~/.config/gh-token`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var value []byte
			var err error
			switch f, ok := e.stdin.(*os.File); {
			case file != "":
				value, err = os.ReadFile(file)
			case ok && term.IsTerminal(int(f.Fd())):
				fmt.Fprintf(e.stderr, "value of %s: ", args[1])
				value, err = term.ReadPassword(int(f.Fd()))
				fmt.Fprintln(e.stderr)
			default:
				value, err = io.ReadAll(io.LimitReader(e.stdin, 1<<20))
			}
			if err != nil {
				return err
			}
			value = bytes.TrimSuffix(bytes.TrimSuffix(value, []byte("\n")), []byte("\r"))
			if err := e.client().Sprite(args[0]).SetSecret(cmd.Context(), args[1], value); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "set secret %s of %s (%d bytes)\n", args[1], args[0], len(value))
			return nil
		},
	}
	set.Flags().StringVar(&file, "file", "", "read the value from this file")
	var asJSON bool
	list := &cobra.Command{
		Use:   "list NAME",
		Short: "List the names of a sprite's secrets",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, err := e.client().Sprite(args[0]).Secrets(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, keys)
			}
			for _, k := range keys {
				fmt.Fprintln(e.stdout, k)
			}
			return nil
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	rm := &cobra.Command{
		Use:   "rm NAME KEY",
		Short: "Remove a secret",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.client().Sprite(args[0]).RemoveSecret(cmd.Context(), args[1])
		},
	}
	c.AddCommand(set, list, rm)
	return c
}
