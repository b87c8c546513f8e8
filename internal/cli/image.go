package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newImage(e *env) *cobra.Command {
	c := &cobra.Command{Use: "image", Short: "List and build root images"}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List root images and whether they are built",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			imgs, err := e.client().Images(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, imgs)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tBUILT\tSIZE\tBUILT AT\tDESCRIPTION")
			for _, im := range imgs {
				size, at := "-", "-"
				if im.Built {
					size = fmt.Sprintf("%d MiB", im.SizeBytes>>20)
					at = im.BuiltAt.Local().Format(time.DateTime)
				}
				fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\n", im.Name, im.Built, size, at, im.Description)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	build := &cobra.Command{
		Use:   "build IMAGE",
		Short: "Build (or rebuild) a root image: minimal or dev",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t0 := time.Now()
			pr := newBuildProgress(e.stderr)
			info, err := e.client().BuildImage(cmd.Context(), args[0], pr.report)
			pr.finish()
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "built %s (%d MiB) in %s\n", info.Name, info.SizeBytes>>20, time.Since(t0).Round(100*time.Millisecond))
			return nil
		},
	}
	c.AddCommand(list, build)
	return c
}
