package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/api"
)

func newToken(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "token",
		Short: "Make, list and revoke the tokens of the API over TCP (wispd --listen)",
		Long: `A token opens wispd's API over TCP: wisp --host http://HOST:7781 --token T,
or WISP_HOST and WISP_TOKEN. It is shown once, when made; wispd keeps only
its SHA-256. A token made with --sprite reaches only those sprites (others
are "not found"), and cannot create sprites or manage images. Tokens are
managed only on the daemon's host, over its unix socket.`,
	}
	var sprites []string
	var e2b, asJSON bool
	var name string
	create := &cobra.Command{
		Use:   "create --name NAME [--sprite S]... [--e2b]",
		Short: "Make a token and print it (once)",
		Example: `  wisp token create --name laptop
  wisp token create --name ci --sprite build --sprite test --json
  wisp token create --name sdk --e2b        # an e2b_ key for the E2B-compatible API`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" {
				return fmt.Errorf("a token needs a name: --name NAME")
			}
			t, err := e.client().CreateToken(cmd.Context(), api.TokenCreateRequest{Name: name, Sprites: sprites, E2B: e2b})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, t)
			}
			fmt.Fprintln(e.stdout, t.Token)
			fmt.Fprintf(e.stderr, "token %s (%s): shown this once; keep it secret. Revoke it with `wisp token revoke %s`.\n", t.Name, scope(t), t.Name)
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "the token's name (for list and revoke)")
	create.Flags().StringArrayVar(&sprites, "sprite", nil, "reach only this sprite (repeatable); default: all, and the whole API")
	create.Flags().BoolVar(&e2b, "e2b", false, "an E2B API key (e2b_...) for the E2B-compatible API, instead of a wisp token")
	create.Flags().BoolVar(&asJSON, "json", false, "print as JSON (name, token, ...)")

	var listJSON bool
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List tokens: names, kinds, scopes and ages, never secrets",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ts, err := e.client().Tokens(cmd.Context())
			if err != nil {
				return err
			}
			if listJSON {
				return printJSON(e.stdout, ts)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tSCOPE\tCREATED")
			for _, t := range ts {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Kind, scope(t), t.Created.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print as JSON")

	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a token: it opens nothing from the next request on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := e.client().RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "revoked token %s\n", args[0])
			return nil
		},
	}
	c.AddCommand(create, list, revoke)
	return c
}

func scope(t api.Token) string {
	if len(t.Sprites) == 0 {
		return "all sprites"
	}
	return "sprites " + strings.Join(t.Sprites, ",")
}
