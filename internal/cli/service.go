package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/api"
)

func newService(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "service",
		Short: "Long-running processes of a sprite that its agent keeps running",
		Long: `A service is a command the sprite's agent runs (as /bin/sh -c CMD, as user
sprite unless --user says otherwise, in a process group of its own) and
starts again when it ends, after a pause that doubles from 1 s to 30 s. Its
output is kept in the sprite (the last 256 KiB): wisp service logs.

Services come back by themselves after wisp stop + start, after a restore
and after a sleep. A service with --port is what the sprite's URL serves
(instead of port 8080).`,
	}
	var (
		sv     api.Service
		asJSON bool
	)
	add := &cobra.Command{
		Use:     "add NAME SVC --cmd 'COMMAND'",
		Short:   "Add a service to a sprite and start it (a stopped sprite is started)",
		Example: "  wisp service add web http --cmd 'httpd -f -p 8080 -h /srv/www' --port 8080\n  wisp service add web worker --cmd './worker' --dir /home/sprite/app --env MODE=prod",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if sv.Cmd == "" {
				return fmt.Errorf("--cmd is required: the command the service runs")
			}
			sv.Name = args[1]
			st, err := e.client().Sprite(args[0]).AddService(cmd.Context(), sv)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, st)
			}
			fmt.Fprintf(e.stdout, "%s/%s %s\n", args[0], st.Name, describeService(st))
			return nil
		},
	}
	add.Flags().StringVar(&sv.Cmd, "cmd", "", "the command (run with /bin/sh -c)")
	add.Flags().StringVar(&sv.Dir, "dir", "", "working directory (default: the user's home)")
	add.Flags().StringArrayVar(&sv.Env, "env", nil, "KEY=VALUE for its environment (repeatable)")
	add.Flags().StringVar(&sv.User, "user", "", "user to run as (default: sprite)")
	add.Flags().IntVar(&sv.Port, "port", 0, "port it listens on: the sprite's URL serves it")
	add.Flags().BoolVar(&asJSON, "json", false, "print as JSON")

	var listJSON bool
	list := &cobra.Command{
		Use:   "list NAME",
		Short: "List a sprite's services and their state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := e.client().Sprite(args[0]).Services(cmd.Context())
			if err != nil {
				return err
			}
			if listJSON {
				return printJSON(e.stdout, list)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERVICE\tSTATE\tPID\tRESTARTS\tPORT\tCOMMAND")
			for _, s := range list {
				port := "-"
				if s.Port > 0 {
					port = fmt.Sprint(s.Port)
				}
				pid := "-"
				if s.Pid > 0 {
					pid = fmt.Sprint(s.Pid)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", s.Name, printable(s.State), pid, s.Restarts, port, printable(oneLine(s.Cmd, 60)))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print as JSON")

	rm := &cobra.Command{
		Use:   "rm NAME SVC",
		Short: "Stop a service and remove it",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.client().Sprite(args[0]).RemoveService(cmd.Context(), args[1])
		},
	}

	logs := &cobra.Command{
		Use:   "logs NAME SVC",
		Short: "Print a service's output (the last 256 KiB the sprite kept)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := e.client().Sprite(args[0]).ServiceLogs(cmd.Context(), args[1])
			if err != nil {
				return err
			}
			defer rc.Close()
			return copyGuestText(e.stdout, rc)
		},
	}
	c.AddCommand(add, list, rm, logs)
	return c
}

func describeService(s api.ServiceStatus) string {
	switch {
	case s.State == "running":
		return fmt.Sprintf("running (pid %d)", s.Pid)
	case s.LastExit != "":
		return fmt.Sprintf("%s (last: %s, %d restarts, since %s)", printable(s.State), printable(s.LastExit), s.Restarts, s.StartedAt.Local().Format(time.TimeOnly))
	}
	return printable(s.State)
}

func oneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		s = s[:n-3] + "..."
	}
	return s
}
