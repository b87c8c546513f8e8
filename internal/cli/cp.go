package cli

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/internal/agent/proto"
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
				return upload(cmd, e.client(), args[0], dName, dPath)
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

func upload(cmd *cobra.Command, c *client.Client, src, name, dst string) error {
	if !path.IsAbs(dst) {
		return fmt.Errorf("cp: sprite path %q must be absolute", dst)
	}
	if _, err := os.Lstat(src); err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	ctx := cmd.Context()
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
	go func() { pw.CloseWithError(writeTar(pw, src, base)) }()
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

// writeTar writes src as a tar whose top-level entry is named top.
func writeTar(w io.Writer, src, top string) error {
	tw := tar.NewWriter(w)
	root := filepath.Clean(src)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			link, _ = os.Readlink(p)
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return nil // sockets, devices: skipped
		}
		rel, _ := filepath.Rel(root, p)
		hdr.Name = path.Join(top, filepath.ToSlash(rel))
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.CopyN(tw, f, hdr.Size)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
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
	err = extractTar(pr, dir, path.Base(path.Clean(src)), rename)
	pr.CloseWithError(err)
	return err
}

// extractTar unpacks r under dir. The tar comes from a sprite, which is
// hostile: names are confined to dir, links are never followed while
// writing, and only files, directories and symlinks are made. The top-level
// name top is replaced by rename when rename is set.
func extractTar(r io.Reader, dir, top, rename string) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("cp: %w", err)
		}
		name := path.Clean("/" + hdr.Name)[1:] // confined: no leading /, no ..
		if name == "" {
			continue
		}
		if rename != "" {
			first, rest, _ := strings.Cut(name, "/")
			if first == top {
				name = path.Join(rename, rest)
			}
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		if err := checkParents(dir, target); err != nil {
			return err
		}
		mode := fs.FileMode(hdr.Mode) & 0o777
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			os.Remove(target)
			f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			os.Remove(target)
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return err
			}
		}
	}
}

// checkParents refuses a target whose parent directories below root are
// not real directories (a symlink planted by an earlier entry).
func checkParents(root, target string) error {
	rel, err := filepath.Rel(root, filepath.Dir(target))
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("cp: entry %q leaves %s", target, root)
	}
	cur := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if part == "." {
			continue
		}
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if err != nil {
			return fmt.Errorf("cp: %w", err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("cp: refusing to write through %s: not a directory", cur)
		}
	}
	return nil
}
