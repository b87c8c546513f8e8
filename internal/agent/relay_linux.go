package agent

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unsent is what c's peer has not read yet of what was written to it:
// the socket's send queue (SIOCOUTQ, which for a unix socket counts the
// buffers, not only their data, that sit in the peer's receive queue):
// 0 once the peer has read everything.
func unsent(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, fmt.Errorf("cannot see what %T has not sent", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var ierr error
	if err := raw.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
		return 0, err
	}
	return n, ierr
}
