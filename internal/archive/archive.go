// Package archive writes and unpacks the tar streams of `wisp cp`. Unpacking
// treats the stream as hostile (it may come from a sprite): every entry is
// confined to the destination, nothing is written through a symlink, and
// only directories, regular files and symlinks are made.
package archive

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
)

// Write writes src (a file or a directory tree) as a tar whose top-level
// entry is named top. Owners are not recorded; sockets and devices are
// skipped.
func Write(w io.Writer, src, top string) error {
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
		if err != nil || !(fi.Mode().IsRegular() || fi.IsDir() || link != "") {
			return nil
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
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.CopyN(tw, f, hdr.Size)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// ErrUnsafe marks an entry that would leave the destination or write
// through something that is not a directory.
var ErrUnsafe = errors.New("unsafe tar entry")

// Options tune Extract.
type Options struct {
	// Rename maps an entry's cleaned, relative name (may be nil).
	Rename func(name string) string
	// Made is called for each path made (to chown it, say); may be nil.
	Made func(path string) error
}

// Extract unpacks r under dir, which must exist.
func Extract(r io.Reader, dir string, o Options) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		// Rooting the name before cleaning keeps ".." inside dir.
		name := path.Clean("/" + hdr.Name)[1:]
		if o.Rename != nil && name != "" {
			name = path.Clean("/" + o.Rename(name))[1:]
		}
		if name == "" {
			continue // the destination itself
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		if err := realParents(dir, target); err != nil {
			return err
		}
		mode := fs.FileMode(hdr.Mode) & 0o7777
		switch hdr.Typeflag {
		case tar.TypeDir:
			if fi, err := os.Lstat(target); err == nil && !fi.IsDir() {
				return fmt.Errorf("%w: %s exists and is not a directory", ErrUnsafe, target)
			}
			if err := os.MkdirAll(target, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			os.Remove(target) // replace, never write through, what is there
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
		default:
			continue
		}
		if o.Made != nil {
			if err := o.Made(target); err != nil {
				return err
			}
		}
	}
}

// realParents makes sure every directory between root and target's parent
// is a real directory (making missing ones), so that an earlier entry's
// symlink cannot redirect a write.
func realParents(root, target string) error {
	rel, err := filepath.Rel(root, filepath.Dir(target))
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return fmt.Errorf("%w: %s leaves %s", ErrUnsafe, target, root)
	}
	if rel == "." {
		return nil
	}
	cur := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			if err := os.Mkdir(cur, 0o755); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%w: %s is not a directory", ErrUnsafe, cur)
		}
	}
	return nil
}
