package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/client"
	"github.com/wisp-sh/wisp/internal/archive"
)

func newCp(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files and directories into or out of a sprite",
		Long: `Copy files and directories between the host and a sprite. Exactly one
side is NAME:/absolute/path. If DST is an existing directory, SRC is
copied into it; otherwise SRC is copied to DST.`,
		Example: `  wisp cp ./src dev:/home/sprite/
  wisp cp dev:/home/sprite/out.log ./out.log`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			sName, sPath, sRemote := splitRemote(args[0])
			dName, dPath, dRemote := splitRemote(args[1])
			switch {
			case sRemote && dRemote:
				return errors.New("cp: both sides are in sprites; one side must be a local path")
			case !sRemote && !dRemote:
				return errors.New("cp: neither side is in a sprite; write one side as NAME:/path")
			case dRemote:
				return upload(cmd.Context(), e.client(), args[0], dName, dPath)
			default:
				return download(cmd, e.client(), sName, sPath, args[1])
			}
		},
	}
}

// splitRemote splits "name:/path". A local path with a colon must start
// with ./ or /.
func splitRemote(arg string) (name, p string, ok bool) {
	if strings.HasPrefix(arg, "/") || strings.HasPrefix(arg, ".") {
		return "", arg, false
	}
	name, p, ok = strings.Cut(arg, ":")
	return name, p, ok && name != ""
}

func upload(ctx context.Context, c *client.Client, src, name, dst string) error {
	if !path.IsAbs(dst) {
		return fmt.Errorf("cp: sprite path %q must be absolute", dst)
	}
	if _, err := os.Lstat(src); err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	sp := c.Sprite(name)
	dir, base := path.Dir(dst), path.Base(dst)
	if fi, err := sp.Stat(ctx, dst); err == nil && fi.IsDir {
		dir, base = dst, filepath.Base(filepath.Clean(src))
	} else if err != nil && !errors.Is(err, client.ErrNotFound) {
		return err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(archive.Write(pw, src, base)) }()
	err := sp.CopyIn(ctx, dir, pr)
	pr.CloseWithError(err)
	if err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	return nil
}

func download(cmd *cobra.Command, c *client.Client, name, src, dst string) error {
	if !path.IsAbs(src) {
		return fmt.Errorf("cp: sprite path %q must be absolute", src)
	}
	dir, rename := dst, ""
	if fi, err := os.Stat(dst); err != nil || !fi.IsDir() {
		dir, rename = filepath.Dir(dst), filepath.Base(dst)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("cp: %s is not a directory", dir)
		}
	}
	rc, err := c.Sprite(name).CopyOut(cmd.Context(), src)
	if err != nil {
		return err
	}
	defer rc.Close()
	// The tar comes from the sprite: archive.Extract confines it to dir.
	top := path.Base(path.Clean(src))
	err = archive.Extract(rc, dir, archive.Options{Rename: func(name string) string {
		if first, rest, _ := strings.Cut(name, "/"); rename != "" && first == top {
			return path.Join(rename, rest)
		}
		return name
	}})
	if err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	return nil
}
