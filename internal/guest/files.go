package guest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/archive"
)

var (
	fsErrNotExist   = fs.ErrNotExist
	fsErrExist      = fs.ErrExist
	fsErrPermission = fs.ErrPermission
)

func fileInfo(name string, fi fs.FileInfo, full string) proto.FileInfo {
	p := proto.FileInfo{Name: name, Size: fi.Size(), Mode: uint32(fi.Mode()), ModTime: fi.ModTime(), IsDir: fi.IsDir()}
	if fi.Mode()&fs.ModeSymlink != 0 {
		p.Link, _ = os.Readlink(full)
	}
	return p
}

func absPath(p string) (string, error) {
	if p == "" || !filepath.IsAbs(p) {
		return "", invalid("path %q must be absolute", p)
	}
	return filepath.Clean(p), nil
}

func stat(path string) (proto.FileInfo, error) {
	p, err := absPath(path)
	if err != nil {
		return proto.FileInfo{}, err
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return proto.FileInfo{}, err
	}
	return fileInfo(filepath.Base(p), fi, p), nil
}

// stats serves OpStats.
func stats(paths []string) ([]proto.FileInfo, bool, error) {
	var out []proto.FileInfo
	for _, p := range paths {
		if dir, ok := strings.CutSuffix(p, "/*"); ok {
			ents, truncated, err := list(dir)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, false, err
			}
			for _, e := range ents {
				if len(out) == proto.MaxList {
					return out, true, nil
				}
				e.Name = filepath.Join(filepath.Clean(dir), e.Name)
				out = append(out, e)
			}
			if truncated {
				return out, true, nil
			}
			continue
		}
		fi, err := stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		if len(out) == proto.MaxList {
			return out, true, nil
		}
		fi.Name = filepath.Clean(p)
		out = append(out, fi)
	}
	return out, false, nil
}

func list(path string) ([]proto.FileInfo, bool, error) {
	p, err := absPath(path)
	if err != nil {
		return nil, false, err
	}
	names, err := readDirNames(p, proto.MaxList+1)
	if err != nil {
		return nil, false, err
	}
	truncated := len(names) > proto.MaxList
	if truncated {
		names = names[:proto.MaxList]
	}
	out := make([]proto.FileInfo, 0, len(names))
	for _, name := range names {
		full := filepath.Join(p, name)
		fi, err := os.Lstat(full)
		if err != nil {
			continue // gone meanwhile
		}
		out = append(out, fileInfo(name, fi, full))
	}
	return out, truncated, nil
}

// readDirNames returns up to n names of dir's entries, in the directory's
// order, without "." and "..". Raw system calls rather than os.Open and
// ReadDir, which register the folder with the poller and switch it to
// non-blocking and back: five system calls more than open, getdents and
// close, each dear under gVisor (a kept login environment stats
// /etc/profile.d before every E2B command starts).
func readDirNames(dir string, n int) ([]string, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	var names []string
	buf := make([]byte, 8<<10)
	for len(names) < n {
		m, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "readdirent", Path: dir, Err: err}
		}
		if m <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:m], n-len(names), names)
	}
	return names, nil
}

func mkdir(req proto.Request) error {
	p, err := absPath(req.Path)
	if err != nil {
		return err
	}
	mode := fs.FileMode(req.Mode & 0o7777)
	if mode == 0 {
		mode = 0o755
	}
	u, err := lookupUser(req.User)
	if err != nil {
		return err
	}
	if req.Recursive {
		if err := os.MkdirAll(p, mode); err != nil {
			return err
		}
	} else if err := os.Mkdir(p, mode); err != nil {
		return err
	}
	return os.Lchown(p, u.uid, u.gid)
}

func remove(req proto.Request) error {
	p, err := absPath(req.Path)
	if err != nil {
		return err
	}
	if p == "/" {
		return invalid("refusing to remove /")
	}
	if _, err := os.Lstat(p); err != nil {
		return err
	}
	if req.Recursive {
		return os.RemoveAll(p)
	}
	return os.Remove(p)
}

// frameWriter turns writes into TData frames.
type frameWriter struct{ w io.Writer }

func (fw frameWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), proto.ChunkSize)
		if err := proto.WriteFrame(fw.w, proto.TData, p[:c]); err != nil {
			return n, err
		}
		n += c
		p = p[c:]
	}
	return n, nil
}

// frameReader reads TData frames until TEnd.
type frameReader struct {
	r   io.Reader
	buf []byte
	end bool
}

func (fr *frameReader) Read(p []byte) (int, error) {
	for len(fr.buf) == 0 {
		if fr.end {
			return 0, io.EOF
		}
		t, b, err := proto.ReadFrame(fr.r, proto.MaxFrame)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		switch t {
		case proto.TData:
			fr.buf = b
		case proto.TEnd:
			fr.end = true
		default:
			return 0, fmt.Errorf("unexpected frame type %d in data stream", t)
		}
	}
	n := copy(p, fr.buf)
	fr.buf = fr.buf[n:]
	return n, nil
}

func (s *Server) readFile(st io.ReadWriter, req proto.Request) {
	fail := func(err error) { proto.WriteJSON(st, proto.TResponse, errResponse(err)) }
	p, err := absPath(req.Path)
	if err != nil {
		fail(err)
		return
	}
	f, err := os.Open(p)
	if err != nil {
		fail(err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		fail(err)
		return
	}
	if fi.IsDir() {
		fail(invalid("%s is a directory", p))
		return
	}
	info := fileInfo(filepath.Base(p), fi, p)
	if err := proto.WriteJSON(st, proto.TResponse, proto.Response{File: &info}); err != nil {
		return
	}
	if _, err := io.Copy(frameWriter{st}, f); err != nil {
		fail(err)
		return
	}
	proto.WriteFrame(st, proto.TEnd, nil)
}

// writeFile writes the data stream to a temporary file beside Path and
// renames it into place, so a broken stream leaves the old file intact.
func writeFile(st io.Reader, req proto.Request) error {
	fr := &frameReader{r: st}
	p, err := absPath(req.Path)
	if err != nil {
		io.Copy(io.Discard, fr)
		return err
	}
	u, err := lookupUser(req.User)
	if err != nil {
		io.Copy(io.Discard, fr)
		return err
	}
	mode := fs.FileMode(req.Mode & 0o7777)
	if mode == 0 {
		mode = 0o644
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".wisp-*")
	if err != nil {
		io.Copy(io.Discard, fr)
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, fr); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chown(u.uid, u.gid); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

// tarOut streams a tar of Path whose entries are named from Path's base name.
func tarOut(st io.ReadWriter, req proto.Request) {
	p, err := absPath(req.Path)
	if err == nil {
		_, err = os.Lstat(p)
	}
	if err != nil {
		proto.WriteJSON(st, proto.TResponse, errResponse(err))
		return
	}
	if err := proto.WriteJSON(st, proto.TResponse, proto.Response{}); err != nil {
		return
	}
	err = archive.Write(frameWriter{st}, p, filepath.Base(p))
	if err != nil {
		proto.WriteJSON(st, proto.TResponse, errResponse(err))
		return
	}
	proto.WriteFrame(st, proto.TEnd, nil)
}

// tarIn unpacks the data stream under the directory Path. Entries may not
// leave it; files are owned by the request's user.
func tarIn(st io.Reader, req proto.Request) error {
	fr := &frameReader{r: st}
	defer io.Copy(io.Discard, fr)
	dst, err := absPath(req.Path)
	if err != nil {
		return err
	}
	u, err := lookupUser(req.User)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(dst); err != nil {
		return err
	} else if !fi.IsDir() {
		return invalid("%s is not a directory", dst)
	}
	return archive.Extract(fr, dst, archive.Options{Made: func(p string) error {
		os.Lchown(p, u.uid, u.gid)
		return nil
	}})
}
