package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newDoctor shows the daemon's report of its host. The CLI may run on
// another machine than wispd (--host), so it probes nothing itself.
func newDoctor(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "doctor",
		Short: "Show what wispd's host offers and what wisp will use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := e.client().Doctor(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, rep)
			}
			fmt.Fprint(e.stdout, rep.Text)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}
