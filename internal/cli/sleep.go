package cli

import (
	"cmp"
	"fmt"
	"math"
	"strconv"
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
	var asJSON bool
	c := &cobra.Command{
		Use:   "set NAME KEY=VALUE...",
		Short: "Change a sprite's settings: idle, size, cap",
		Long: `Change a sprite's settings:

  idle=DURATION|never|default     how long it may sit unused before it sleeps
  cpus=N memory=MiB disk=GiB      its size: a stopped sprite at once, a running or
                                  sleeping one at its next cold boot (disks only grow)
  cap.cpu_seconds=N cap.cost=N    what it may use per period (per=day, the default,
  per=day|month                   or per=month, UTC); at its cap it is put to sleep
                                  and refuses to wake until the cap is raised
  cap.none                        remove its cap

Every value is checked before any is applied.`,
		Example: "  wisp set dev idle=5m\n  wisp set dev cpus=2 memory=2048 disk=20\n  wisp set dev cap.cpu_seconds=600 per=day\n  wisp set dev cap.none",
		Args:    cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ch, err := parseSettings(args[1:])
			if err != nil {
				return err
			}
			sp := e.client().Sprite(args[0])
			ctx := cmd.Context()
			var out struct {
				api.Sprite
				Cap *api.CapStatus `json:"cap,omitempty"`
			}
			if out.Sprite, err = sp.Update(ctx, ch.update); err != nil {
				return err
			}
			if ch.cap != nil {
				st, err := sp.SetCap(ctx, *ch.cap)
				if err != nil {
					return err
				}
				out.Cap = &st
			}
			if asJSON {
				return printJSON(e.stdout, out)
			}
			s := out.Sprite
			if ch.update.IdleSeconds != nil {
				fmt.Fprintf(e.stdout, "%s idle=%s\n", s.Name, idleString(s.IdleSeconds))
			}
			if ch.update.Size != nil {
				if p := s.Pending; p != nil {
					fmt.Fprintf(e.stdout, "%s cpus=%d memory=%d disk=%d at its next cold boot (now %d, %d, %d): wisp stop %s && wisp start %s\n",
						s.Name, p.CPUs, p.MemoryMiB, p.DiskGiB, s.CPUs, s.MemoryMiB, s.DiskGiB, s.Name, s.Name)
				} else {
					fmt.Fprintf(e.stdout, "%s cpus=%d memory=%d disk=%d\n", s.Name, s.CPUs, s.MemoryMiB, s.DiskGiB)
				}
			}
			if c := out.Cap; c != nil {
				fmt.Fprintf(e.stdout, "%s %s\n", s.Name, capString(c.Cap))
				if c.Capped != "" {
					fmt.Fprintf(e.stdout, "%s is held asleep: %s\n", s.Name, printable(c.Capped))
				}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the sprite (and its cap) as JSON")
	return c
}

// settings are the changes of one `wisp set`.
type settings struct {
	update api.UpdateRequest
	cap    *api.Cap
}

// parseSettings reads KEY=VALUE arguments, all or none.
func parseSettings(args []string) (settings, error) {
	var ch settings
	var sz api.Size
	var cp api.Cap
	var capSet, capNone bool
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if a == "cap.none" {
			capNone = true
			continue
		}
		if !ok || v == "" {
			return ch, fmt.Errorf("set: %q: want KEY=VALUE (idle, cpus, memory, disk, cap.cpu_seconds, cap.cost, per) or cap.none", a)
		}
		var err error
		switch k {
		case "idle":
			var secs int
			if secs, err = parseIdle(v); err == nil {
				ch.update.IdleSeconds = &secs
			}
		case "cpus":
			sz.CPUs, err = positive(k, v)
		case "memory":
			sz.MemoryMiB, err = positive(k, v)
		case "disk":
			sz.DiskGiB, err = positive(k, v)
		case "cap.cpu_seconds", "cap.cost":
			var f float64
			if f, err = strconv.ParseFloat(v, 64); err != nil || f <= 0 || math.IsInf(f, 0) || math.IsNaN(f) {
				err = fmt.Errorf("set: %s=%q: want a number above 0", k, v)
			}
			if k == "cap.cost" {
				cp.Cost = f
			} else {
				cp.CPUSeconds = f
			}
			capSet = true
		case "per", "cap.per":
			if v != "day" && v != "month" {
				err = fmt.Errorf("set: per=%q: want day or month", v)
			}
			cp.Per, capSet = v, true
		default:
			err = fmt.Errorf("set: unknown setting %q (known: idle, cpus, memory, disk, cap.cpu_seconds, cap.cost, per, cap.none)", k)
		}
		if err != nil {
			return ch, err
		}
	}
	if capNone && capSet {
		return ch, fmt.Errorf("set: cap.none with a cap: say one or the other")
	}
	if capSet && cp.CPUSeconds == 0 && cp.Cost == 0 {
		return ch, fmt.Errorf("set: per= needs cap.cpu_seconds= or cap.cost=")
	}
	if capSet || capNone {
		ch.cap = &cp
	}
	if sz != (api.Size{}) {
		ch.update.Size = &sz
	}
	return ch, nil
}

func positive(k, v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("set: %s=%q: want a whole number above 0", k, v)
	}
	return n, nil
}

func capString(c api.Cap) string {
	if c.CPUSeconds == 0 && c.Cost == 0 {
		return "no cap"
	}
	var parts []string
	if c.CPUSeconds > 0 {
		parts = append(parts, fmt.Sprintf("cap.cpu_seconds=%g", c.CPUSeconds))
	}
	if c.Cost > 0 {
		parts = append(parts, fmt.Sprintf("cap.cost=%g", c.Cost))
	}
	return strings.Join(parts, " ") + " per=" + cmp.Or(c.Per, "day")
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
