package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/api"
)

func newImage(e *env) *cobra.Command {
	c := &cobra.Command{Use: "image", Short: "List, build, save and remove root images"}
	c.AddCommand(newImageList(e), newImageInfo(e), newImageBuild(e), newImageSave(e), newImageRm(e))
	return c
}

// contentsLine summarises an image's versions, the notable ones first.
func contentsLine(m map[string]string) string {
	first := []string{"claude", "node", "go", "python3", "git", "gh", "debian"}
	var parts []string
	for _, k := range first {
		if v, ok := m[k]; ok {
			parts = append(parts, k+" "+v)
		}
	}
	var rest []string
	for k, v := range m {
		if !slices.Contains(first, k) {
			rest = append(rest, k+" "+v)
		}
	}
	slices.Sort(rest)
	return strings.Join(append(parts, rest...), ", ")
}

func newImageList(e *env) *cobra.Command {
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List root images, whether they are built and what they hold",
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
			fmt.Fprintln(tw, "NAME\tBUILT\tSIZE\tBUILT AT\tDESCRIPTION\tCONTENTS")
			for _, im := range imgs {
				size, at := "-", "-"
				if im.Built {
					size = fmt.Sprintf("%d MiB", im.SizeBytes>>20)
					at = im.BuiltAt.Local().Format(time.DateTime)
				}
				fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\t%s\n", im.Name, im.Built, size, at, im.Description, contentsLine(im.Contents))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return list
}

func newImageInfo(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "info IMAGE",
		Short: "Show an image: its versions and, for one of your own, its recipe",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			im, err := e.client().Image(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, im)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			row := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
			row("name", im.Name)
			row("description", im.Description)
			row("built", im.Built)
			if im.Built {
				row("size", fmt.Sprintf("%d MiB", im.SizeBytes>>20))
				row("built at", im.BuiltAt.Local().Format(time.RFC3339))
				if im.BuildSeconds > 0 {
					row("build took", fmt.Sprintf("%.0f s", im.BuildSeconds))
				}
			}
			keys := make([]string, 0, len(im.Contents))
			for k := range im.Contents {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				row("  "+k, im.Contents[k])
			}
			if r := im.Recipe; r != nil {
				row("from", r.From)
				if r.Sprite != "" {
					row("saved from sprite", r.Sprite)
				}
				for _, c := range r.Copy {
					row("copy", c)
				}
				for _, c := range r.Run {
					row("run", c)
				}
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func newImageBuild(e *env) *cobra.Command {
	var recipe api.Recipe
	var backend string
	c := &cobra.Command{
		Use:   "build IMAGE [--from BASE --run CMD... --copy LOCAL:/PATH...]",
		Short: "Build a built-in image (minimal, dev), or an image of your own on top of another",
		Long: `Without --from, builds (or rebuilds) a built-in image: minimal or dev.

With --from, builds an image of your own: a throwaway sprite of BASE gets
the --copy files (in order given, before the commands), runs each --run
command as root with sh -c (in order; the first that fails ends the build),
is stopped, and its disk becomes IMAGE (a reflink). The recipe is kept and
shown by 'wisp image info'. The throwaway sprite is destroyed either way.`,
		Example: `  wisp image build dev
  wisp image build pg --from dev --run 'apt-get update && apt-get install -y postgresql'
  wisp image build app --from dev --copy ./app:/srv/app --run 'cd /srv/app && npm ci'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t0 := time.Now()
			if recipe.From == "" {
				if len(recipe.Run) > 0 || len(recipe.Copy) > 0 {
					return errors.New("--run and --copy need --from BASE")
				}
				pr := newBuildProgress(e.stderr)
				info, err := e.client().BuildImage(cmd.Context(), args[0], pr.report)
				pr.finish()
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "built %s (%d MiB) in %s\n", info.Name, info.SizeBytes>>20, time.Since(t0).Round(100*time.Millisecond))
				return nil
			}
			info, err := buildFrom(cmd.Context(), e, args[0], recipe, backend)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "built %s from %s (%d MiB) in %s\n", info.Name, recipe.From, info.SizeBytes>>20, time.Since(t0).Round(100*time.Millisecond))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&recipe.From, "from", "", "the image to build on")
	f.StringArrayVar(&recipe.Run, "run", nil, "a shell command to run as root (repeatable, in order)")
	f.StringArrayVar(&recipe.Copy, "copy", nil, "LOCAL:/PATH, a file or folder to copy in before the commands (repeatable)")
	f.StringVar(&backend, "backend", "", "backend of the throwaway sprite (default from wispd)")
	return c
}

// buildFrom runs recipe in a throwaway sprite and saves its disk as name.
// The sprite is destroyed whatever happens, also on ^C.
func buildFrom(ctx context.Context, e *env, name string, recipe api.Recipe, backend string) (api.Image, error) {
	cl := e.client()
	// The daemon checks the name when it saves; a built-in name fails
	// here, before the build.
	if im, err := cl.Image(ctx, name); err == nil && im.Recipe == nil {
		return api.Image{}, fmt.Errorf("image %q is built in: choose another name", name)
	}
	type copySpec struct{ local, remote string }
	var copies []copySpec
	for _, c := range recipe.Copy {
		local, remote, ok := strings.Cut(c, ":")
		if !ok || local == "" || !path.IsAbs(remote) {
			return api.Image{}, fmt.Errorf("--copy %q: want LOCAL:/absolute/path", c)
		}
		if _, err := os.Lstat(local); err != nil {
			return api.Image{}, fmt.Errorf("--copy %q: %w", c, err)
		}
		copies = append(copies, copySpec{local, remote})
	}
	if base, err := cl.Image(ctx, recipe.From); err != nil {
		return api.Image{}, err
	} else if !base.Built {
		return api.Image{}, fmt.Errorf("image %q is not built: build it first with `wisp image build %s`", recipe.From, recipe.From)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := make([]byte, 3)
	rand.Read(b)
	tmp := "imgbuild-" + hex.EncodeToString(b)
	steps := 3 + len(copies) + len(recipe.Run)
	step := 0
	phase := func(s string) {
		step++
		fmt.Fprintf(e.stderr, "[%d/%d] %s\n", step, steps, s)
	}
	phase(fmt.Sprintf("create throwaway sprite %s from %s", tmp, recipe.From))
	if _, err := cl.Create(ctx, api.CreateRequest{Name: tmp, Image: recipe.From, Backend: backend, IdleSeconds: -1}); err != nil {
		return api.Image{}, err
	}
	defer func() {
		if err := cl.Sprite(tmp).Destroy(context.WithoutCancel(ctx)); err != nil {
			fmt.Fprintf(e.stderr, "wisp: destroy throwaway sprite %s: %v\n", tmp, err)
		}
	}()
	for _, c := range copies {
		phase("copy " + c.local + " to " + c.remote)
		if err := upload(ctx, cl, c.local, tmp, c.remote); err != nil {
			return api.Image{}, err
		}
	}
	for _, r := range recipe.Run {
		phase("run " + r)
		run := cl.Sprite(tmp).CommandContext(ctx, "sh", "-c", r)
		run.User, run.Env = "root", []string{"DEBIAN_FRONTEND=noninteractive"}
		run.Stdout, run.Stderr = e.stderr, e.stderr
		if err := run.Run(); err != nil {
			return api.Image{}, fmt.Errorf("run %q: %w; image %s not built", r, err, name)
		}
	}
	phase("stop the sprite")
	if _, err := cl.Sprite(tmp).Stop(ctx); err != nil {
		return api.Image{}, err
	}
	phase("save its disk as image " + name)
	return cl.SaveImage(ctx, name, api.SaveImageRequest{Sprite: tmp, Recipe: &recipe})
}

func newImageSave(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "save SPRITE IMAGE",
		Short: "Make an image of a sprite's disk as it is now (a reflink; a running sprite is frozen for the moment)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			t0 := time.Now()
			info, err := e.client().SaveImage(cmd.Context(), args[1], api.SaveImageRequest{Sprite: args[0]})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "saved %s from sprite %s (%d MiB) in %s\n", info.Name, args[0], info.SizeBytes>>20, time.Since(t0).Round(time.Millisecond))
			return nil
		},
	}
}

func newImageRm(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "rm IMAGE",
		Short: "Remove an image of your own (sprites made from it keep their disks)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.client().RemoveImage(cmd.Context(), args[0])
		},
	}
}
