package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/api"
)

func newCreate(e *env) *cobra.Command {
	var o api.CreateRequest
	var asJSON bool
	var idle string
	var pf policyFlags
	c := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a sprite and boot it",
		Example: `  wisp create dev
  wisp create scratch --image minimal --cpus 2 --memory 2048 --disk 20
  wisp create agent --env GIT_AUTHOR_NAME=bot --env TZ=UTC
  wisp create agent --allow 'github.com,*.npmjs.org,registry.npmjs.org'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			secs, err := parseIdle(idle)
			if err != nil {
				return err
			}
			o.IdleSeconds = secs
			if o.Policy, _, err = pf.policy(); err != nil {
				return err
			}
			t0 := time.Now()
			sp, err := e.client().Create(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, sp)
			}
			fmt.Fprintf(e.stdout, "created %s (%s/%s, %d cpu, %d MiB, %d GiB, image %s, from %s) in %s\n",
				sp.Name, sp.Backend, sp.Accel, sp.CPUs, sp.MemoryMiB, sp.DiskGiB, sp.Image, sp.Origin, time.Since(t0).Round(time.Millisecond))
			return nil
		},
	}
	f := c.Flags()
	f.IntVar(&o.CPUs, "cpus", 0, "virtual CPUs (default from wispd, 1)")
	f.IntVar(&o.MemoryMiB, "memory", 0, "memory in MiB (default from wispd, 1024)")
	f.IntVar(&o.DiskGiB, "disk", 0, "disk size in GiB (default from wispd, 10)")
	f.IntVar(&o.Pids, "pids", 0, "process limit inside the sprite (default from wispd, 1024)")
	f.StringVar(&o.Image, "image", "", "root image: dev or minimal (default from wispd, dev)")
	f.StringVar(&o.Backend, "backend", "", "isolation backend: auto, qemu or gvisor (default from wispd)")
	f.StringVar(&idle, "idle", "", "sleep after this long unused: 30s, 5m, never (default from wispd, 30s)")
	f.StringArrayVar(&o.Env, "env", nil, "KEY=VALUE for every exec and console in the sprite (repeatable; for secrets use `wisp secret set`)")
	f.BoolVar(&asJSON, "json", false, "print the sprite as JSON")
	pf.register(c)
	return c
}
