package image

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/dirhash"
)

// download is a pinned artifact: where it comes from and how to check it.
type download struct {
	URL string
	// SRI is an npm "integrity" string (sha512-<base64>), or "".
	SRI string
	// H1 is a Go module hash (h1:<base64>) of a module zip, or "".
	H1 string
}

// name is the file name the artifact is cached under.
func (d download) name() string { return path.Base(d.URL) }

// verify checks the file at p against the pinned hash.
func (d download) verify(p string) error {
	switch {
	case d.SRI != "":
		want, ok := strings.CutPrefix(d.SRI, "sha512-")
		if !ok {
			return fmt.Errorf("%s: unsupported integrity %q", d.name(), d.SRI)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha512.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		if got := base64.StdEncoding.EncodeToString(h.Sum(nil)); got != want {
			return fmt.Errorf("%s: sha512 %s, want %s", d.name(), got, want)
		}
		return nil
	case d.H1 != "":
		got, err := dirhash.HashZip(p, dirhash.Hash1)
		if err != nil {
			return err
		}
		if got != d.H1 {
			return fmt.Errorf("%s: %s, want %s", d.name(), got, d.H1)
		}
		return nil
	}
	return fmt.Errorf("%s: no hash pinned", d.name())
}

// fetch returns the path of d in the download cache, downloading and
// verifying it first when it is not there. A cached file is verified
// again before use; a file that fails is fetched anew. Downloads land under
// a temporary name and are renamed into place only once verified.
func (s *Store) fetch(ctx context.Context, d download) (string, error) {
	dir := s.downloads()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, d.name())
	if _, err := os.Stat(p); err == nil {
		if err := d.verify(p); err == nil {
			return p, nil
		}
		os.Remove(p)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", d.URL, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("download %s: %w", d.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("download %s: %s", d.URL, resp.Status)
	}
	f, err := os.CreateTemp(dir, "."+d.name()+".part-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("download %s: %w", d.URL, err)
	}
	if err := d.verify(f.Name()); err != nil {
		return "", fmt.Errorf("download %s: %w", d.URL, err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return "", err
	}
	return p, nil
}

// untarGz extracts the gzipped tar at src into dst, dropping the first
// strip path elements of each name. Only files, folders and symlinks are
// made; names that would leave dst are refused (os.Root confines them).
func untarGz(src, dst string, strip int) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		name, ok := stripPath(h.Name, strip)
		if !ok {
			continue
		}
		mode := os.FileMode(h.Mode).Perm() | 0o200 // npm tarballs may hold read-only files
		switch h.Typeflag {
		case tar.TypeDir:
			err = root.MkdirAll(name, mode|0o700)
		case tar.TypeReg:
			err = writeRootFile(root, name, mode, tr)
		case tar.TypeSymlink:
			if err = root.MkdirAll(path.Dir(name), 0o755); err == nil {
				root.Remove(name)
				err = root.Symlink(h.Linkname, name)
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %s: %w", src, h.Name, err)
		}
	}
}

// unzipTo extracts the zip at src into dst, dropping the first strip path
// elements of each name (a Go module zip prefixes module@version/).
func unzipTo(src, dst string, strip int) error {
	z, err := zip.OpenReader(src)
	if err != nil {
		return err
	}
	defer z.Close()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, zf := range z.File {
		name, ok := stripPath(zf.Name, strip)
		if !ok || strings.HasSuffix(zf.Name, "/") {
			continue
		}
		rc, err := zf.Open()
		if err != nil {
			return err
		}
		// Module zips carry no modes: keep executables in bin/ and pkg/tool/.
		mode := os.FileMode(0o644)
		if zf.Mode()&0o111 != 0 || strings.HasPrefix(name, "bin/") || strings.HasPrefix(name, "pkg/tool/") {
			mode = 0o755
		}
		err = writeRootFile(root, name, mode, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: %s: %w", src, zf.Name, err)
		}
	}
	return nil
}

func stripPath(name string, strip int) (string, bool) {
	parts := strings.Split(strings.Trim(path.Clean("/"+name), "/"), "/")
	if len(parts) <= strip {
		return "", false
	}
	return path.Join(parts[strip:]...), true
}

func writeRootFile(root *os.Root, name string, mode os.FileMode, r io.Reader) error {
	if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
		return err
	}
	root.Remove(name)
	f, err := root.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Chmod(name, mode)
	}
	return err
}
