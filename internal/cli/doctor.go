package cli

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/internal/client"
	"github.com/wisp-sh/wisp/internal/doctor"
)

func newDoctor(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "doctor",
		Short: "Show what this host offers and what wisp will use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var rep doctor.Report
			raw, err := e.client().Doctor(cmd.Context())
			switch {
			case err == nil:
				if err := json.Unmarshal(raw, &rep); err != nil {
					return err
				}
			case errors.Is(err, client.ErrDaemon):
				// Without a daemon, report what this host offers from here.
				rep = doctor.Probe(doctor.Options{})
				rep.Daemon = err.Error()
			default:
				return err
			}
			if asJSON {
				return printJSON(e.stdout, rep)
			}
			fmt.Fprint(e.stdout, rep.String())
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}
