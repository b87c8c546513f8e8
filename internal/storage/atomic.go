package storage

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFileAtomic writes data to path with mode perm through a temporary
// file in the same folder: write, fsync, rename, fsync the folder. Readers
// see the old content or the new, never a torn file, also after a crash.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// SyncDir writes a folder's entries (names made, renamed or removed in
// it) to stable storage.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// RenameDurable renames old to new and syncs the folders of both, so the
// rename survives a crash once it returns. The caller has synced what old
// holds (see SyncFiles, WriteFileAtomic).
func RenameDurable(old, new string) error {
	if err := os.Rename(old, new); err != nil {
		return err
	}
	if err := SyncDir(filepath.Dir(new)); err != nil {
		return err
	}
	if filepath.Dir(old) != filepath.Dir(new) {
		return SyncDir(filepath.Dir(old))
	}
	return nil
}

// MoveFile moves the file src to dst, also across filesystems: a rename
// where it can, else a copy made durable under a temporary name, renamed
// into place, and only then src removed. A crash leaves dst whole or
// absent, and src in place until dst is whole.
func MoveFile(src, dst string) error {
	if err := RenameDurable(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return err
	}
	_, err = io.Copy(tmp, in)
	if err == nil {
		err = tmp.Chmod(fi.Mode().Perm())
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = RenameDurable(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("move %s to %s: %w", src, dst, err)
	}
	if err := os.Remove(src); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(src))
}

// Current returns dir/name, the one version a folder keeps of something
// (an image imported into the pool, the agent binary of a build): make
// writes it the first time; then the folder's other files matching glob,
// older versions, are removed. Callers serialise their calls.
func Current(dir, name, glob string, make func(dst string) error) (string, error) {
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := make(p); err != nil {
		return "", err
	}
	old, _ := filepath.Glob(filepath.Join(dir, glob))
	for _, o := range old {
		if o != p {
			os.Remove(o)
		}
	}
	return p, nil
}
