package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/api"
)

func newCheckpoint(e *env) *cobra.Command {
	c := &cobra.Command{Use: "checkpoint", Short: "Create, list, show and delete checkpoints of a sprite"}
	var comment string
	var memory, asJSON bool
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Checkpoint a sprite's disk (and with --memory its RAM and processes)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t0 := time.Now()
			ck, err := e.client().Sprite(args[0]).Checkpoint(cmd.Context(), api.CheckpointRequest{Comment: comment, Memory: memory})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, ck)
			}
			kind := "disk"
			if ck.Memory {
				kind = "disk+memory"
			}
			fmt.Fprintf(e.stdout, "%s %s (%s) in %s\n", args[0], ck.ID, kind, time.Since(t0).Round(time.Millisecond))
			return nil
		},
	}
	create.Flags().StringVar(&comment, "comment", "", "a note to remember it by")
	create.Flags().BoolVar(&memory, "memory", false, "also save RAM and device state: a restore resumes running processes")
	create.Flags().BoolVar(&asJSON, "json", false, "print as JSON")

	var listJSON bool
	list := &cobra.Command{
		Use:   "list NAME",
		Short: "List a sprite's checkpoints",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cks, err := e.client().Sprite(args[0]).Checkpoints(cmd.Context())
			if err != nil {
				return err
			}
			if listJSON {
				return printJSON(e.stdout, cks)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tCREATED\tMEMORY\tSIZE\tCOMMENT")
			for _, c := range cks {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%.1f MiB\t%s\n", c.ID, c.CreatedAt.Local().Format(time.DateTime), c.Memory, float64(c.SizeBytes)/(1<<20), c.Comment)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print as JSON")

	info := &cobra.Command{
		Use:   "info NAME ID",
		Short: "Show one checkpoint",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ck, err := e.client().Sprite(args[0]).GetCheckpoint(cmd.Context(), args[1])
			if err != nil {
				return err
			}
			return printJSON(e.stdout, ck)
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME ID",
		Short: "Delete a checkpoint (its space comes back)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := e.client().Sprite(args[0]).DeleteCheckpoint(cmd.Context(), args[1]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s %s deleted\n", args[0], args[1])
			return nil
		},
	}
	c.AddCommand(create, list, info, del)
	return c
}

func newRestore(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "restore NAME ID",
		Short: "Put a sprite back to a checkpoint (later checkpoints stay)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			t0 := time.Now()
			s, err := e.client().Sprite(args[0]).Restore(cmd.Context(), args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s restored to %s, %s, in %s\n", s.Name, args[1], s.State, time.Since(t0).Round(time.Millisecond))
			return nil
		},
	}
}

func newFork(e *env) *cobra.Command {
	var from string
	c := &cobra.Command{
		Use:   "fork NAME NEWNAME",
		Short: "Make a new, independent sprite from a sprite's current state or a checkpoint",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			t0 := time.Now()
			s, err := e.client().Sprite(args[0]).Fork(cmd.Context(), args[1], from)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "forked %s from %s in %s\n", s.Name, args[0], time.Since(t0).Round(time.Millisecond))
			return nil
		},
	}
	c.Flags().StringVar(&from, "from", "", "checkpoint to fork from (default: the current state)")
	return c
}
