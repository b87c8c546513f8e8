//go:build !linux

package agent

import (
	"errors"
	"net"
)

// unsent: the send queue is not visible here, so a session is never
// parked across a swap of its connection.
func unsent(net.Conn) (int, error) {
	return 0, errors.New("cannot see a socket's send queue on this system")
}
