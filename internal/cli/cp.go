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

	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/archive"
	"github.com/wisp-sh/wisp/internal/client"
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
	dir, base := path.Dir(dst), path.Base(dst)
	if fi, err := c.Stat(ctx, name, dst); err == nil && fi.IsDir {
		dir, base = dst, filepath.Base(filepath.Clean(src))
	} else if ce := (*client.Error)(nil); err != nil && !(errors.As(err, &ce) && ce.Code == "not_found") {
		return err
	}
	st, err := c.Stream(ctx, name, proto.Request{Op: proto.OpTarIn, Path: dir})
	if err != nil {
		return err
	}
	defer st.Close()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(archive.Write(pw, src, base)) }()
	if err := sendAll(st, pr, proto.TData); err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	if err := st.WriteFrame(proto.TEnd, nil); err != nil {
		return err
	}
	return readResponse(st)
}

func readResponse(st *client.Stream) error {
	t, p, err := st.ReadFrame()
	if err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	if t != proto.TResponse {
		return fmt.Errorf("cp: unexpected frame type %d", t)
	}
	var r proto.Response
	if err := proto.DecodeJSON(p, &r); err != nil {
		return err
	}
	if r.Error != "" {
		return fmt.Errorf("cp: %s", r.Error)
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
	st, err := c.Stream(cmd.Context(), name, proto.Request{Op: proto.OpTarOut, Path: src})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := readResponse(st); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() {
		for {
			t, p, err := st.ReadFrame()
			if err != nil {
				pw.CloseWithError(fmt.Errorf("stream: %w", err))
				return
			}
			switch t {
			case proto.TData:
				if _, err := pw.Write(p); err != nil {
					return
				}
			case proto.TEnd:
				pw.Close()
				return
			case proto.TResponse:
				var r proto.Response
				proto.DecodeJSON(p, &r)
				pw.CloseWithError(fmt.Errorf("in the sprite: %s", r.Error))
				return
			default:
				pw.CloseWithError(fmt.Errorf("unexpected frame type %d", t))
				return
			}
		}
	}()
	// The tar comes from the sprite: archive.Extract confines it to dir.
	top := path.Base(path.Clean(src))
	err = archive.Extract(pr, dir, archive.Options{Rename: func(name string) string {
		if first, rest, _ := strings.Cut(name, "/"); rename != "" && first == top {
			return path.Join(rename, rest)
		}
		return name
	}})
	pr.CloseWithError(err)
	if err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	return nil
}
