package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/api"
)

// policyFlags are the egress flags of `create` and `policy set`.
type policyFlags struct {
	allow             string
	denyAll, allowAll bool
}

func (p *policyFlags) register(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&p.allow, "allow", "", "reach only these: names (github.com), wildcards (*.npmjs.org) and IPv4 CIDRs, comma-separated")
	f.BoolVar(&p.denyAll, "deny-all", false, "reach nothing")
	f.BoolVar(&p.allowAll, "allow-all", false, "reach everything outside the default deny list (host, LAN, private, link-local)")
}

// policy returns the policy the flags say; set is false when none was given.
// The daemon checks an allowlist's entries.
func (p *policyFlags) policy() (pol api.Policy, set bool, err error) {
	n := 0
	for _, b := range []bool{p.allow != "", p.denyAll, p.allowAll} {
		if b {
			n++
		}
	}
	switch {
	case n == 0:
		return api.Policy{}, false, nil
	case n > 1:
		return api.Policy{}, false, errOnePolicy
	case p.denyAll:
		return api.Policy{Mode: api.PolicyDenyAll}, true, nil
	case p.allowAll:
		return api.Policy{Mode: api.PolicyAllowAll}, true, nil
	}
	pol = api.Policy{Mode: api.PolicyAllowList}
	for _, f := range strings.Split(p.allow, ",") {
		if f = strings.TrimSpace(f); f != "" {
			pol.Allow = append(pol.Allow, f)
		}
	}
	return pol, true, nil
}

var errOnePolicy = errors.New("give one of --allow, --deny-all and --allow-all")

func newPolicy(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "policy",
		Short: "Show or change a sprite's egress policy (applies at once)",
	}
	var pf policyFlags
	set := &cobra.Command{
		Use:   "set NAME (--allow LIST | --deny-all | --allow-all)",
		Short: "Change what a sprite may reach; new connections follow at once, open ones at their next packet",
		Example: `  wisp policy set dev --allow 'github.com,*.npmjs.org,registry.npmjs.org,198.51.100.0/24'
  wisp policy set dev --deny-all
  wisp policy set dev --allow-all`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, ok, err := pf.policy()
			if err != nil {
				return err
			}
			if !ok {
				return errOnePolicy
			}
			got, err := e.client().Sprite(args[0]).SetPolicy(cmd.Context(), p)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s: %s\n", args[0], got)
			return nil
		},
	}
	pf.register(set)
	var asJSON bool
	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a sprite's egress policy",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := e.client().Sprite(args[0]).Policy(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, p)
			}
			fmt.Fprintf(e.stdout, "mode:   %s\n", p.Mode)
			if len(p.Allow) > 0 {
				fmt.Fprintf(e.stdout, "allow:  %s\n", strings.Join(p.Allow, ", "))
			}
			fmt.Fprintln(e.stdout, "always denied: the host, its LAN, other sprites, private, shared, link-local and multicast ranges")
			return nil
		},
	}
	get.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	c.AddCommand(set, get)
	return c
}
