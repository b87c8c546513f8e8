//go:build !linux

package network

import (
	"context"
	"errors"
	"net/netip"
	"os"

	"github.com/wisp-sh/wisp/internal/vmm"
)

// Network is the host side of sprite networking: Linux only.
type Network struct{}

var errNotLinux = errors.New("sprite networking needs Linux")

func Open(Config) (*Network, error)              { return nil, errNotLinux }
func (n *Network) Reserve(netip.Addr)            {}
func (n *Network) Allocate() (netip.Addr, error) { return netip.Addr{}, errNotLinux }
func (n *Network) Release(netip.Addr)            {}
func (n *Network) Attach(context.Context, string, netip.Addr, string, Policy, bool) (*vmm.Net, error) {
	return nil, errNotLinux
}
func (n *Network) SetPolicy(string, Policy) error { return errNotLinux }
func (n *Network) Detach(string) error            { return nil }
func (n *Network) Prune(map[string]bool) error    { return nil }
func (n *Network) Stats(string) (Stats, error)    { return Stats{}, errNotLinux }
func (n *Network) Close() error                   { return nil }
func (n *Network) CIDR() netip.Prefix             { return netip.Prefix{} }
func OpenTap(string, string) (*os.File, error)    { return nil, errNotLinux }
func AddressVeth(*vmm.Net) error                  { return errNotLinux }
func DropTable(string) error                      { return errNotLinux }
