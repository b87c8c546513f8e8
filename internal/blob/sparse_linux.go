package blob

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// dataExtents returns the [start, end) ranges of f that may hold data,
// found with SEEK_DATA and SEEK_HOLE, so a sparse 10 GiB disk is read only
// where it has blocks. A file system without them reports one extent.
func dataExtents(f *os.File, size int64) ([][2]int64, error) {
	var exts [][2]int64
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return append(exts, [2]int64{off, size}), nil
		}
		if err != nil {
			return nil, &os.PathError{Op: "seek data", Path: f.Name(), Err: err}
		}
		if data >= size {
			break
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, &os.PathError{Op: "seek hole", Path: f.Name(), Err: err}
		}
		hole = min(hole, size)
		exts = append(exts, [2]int64{data, hole})
		off = hole
	}
	return exts, nil
}
