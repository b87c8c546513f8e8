package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/api"
)

func newSleep(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "sleep NAME",
		Short: "Put a sprite to sleep now (memory to disk; any use wakes it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t0 := time.Now()
			s, err := e.client().Sprite(args[0]).Sleep(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s %s in %s\n", s.Name, s.State, time.Since(t0).Round(time.Millisecond))
			return nil
		},
	}
}

func newSet(e *env) *cobra.Command {
	return &cobra.Command{
		Use:     "set NAME KEY=VALUE",
		Short:   "Change a sprite setting: idle=DURATION|never|default",
		Example: "  wisp set dev idle=5m\n  wisp set dev idle=never",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, v, ok := strings.Cut(args[1], "=")
			if !ok || k != "idle" {
				return fmt.Errorf("set: unknown setting %q (known: idle=DURATION|never|default)", args[1])
			}
			secs, err := parseIdle(v)
			if err != nil {
				return err
			}
			s, err := e.client().Sprite(args[0]).Update(cmd.Context(), api.UpdateRequest{IdleSeconds: &secs})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s idle=%s\n", s.Name, idleString(s.IdleSeconds))
			return nil
		},
	}
}

// parseIdle turns "5m", "never" or "default" into seconds (-1 never, 0
// the daemon's default).
func parseIdle(v string) (int, error) {
	switch v {
	case "never":
		return -1, nil
	case "default", "":
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second {
		return 0, fmt.Errorf("idle %q: want a duration of at least 1s (30s, 5m), never or default", v)
	}
	return int(d / time.Second), nil
}

func idleString(secs int) string {
	switch {
	case secs < 0:
		return "never"
	case secs == 0:
		return "default"
	}
	return (time.Duration(secs) * time.Second).String()
}
