package network

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// MeasureSetup times what networking adds to a sprite's start, n times:
// Attach (namespace, veth pair or tap, nftables rules, DNS server) and,
// for every other sample, the address a sandbox start adds. It works on a
// network of its own (table wbench in 10.228.0.0/22, upstream DNS nowhere)
// and removes it after. `wisp bench net` asks the daemon to run it: it
// measures this package in the daemon's process, as root, on its host.
func MeasureSetup(n int) ([]time.Duration, error) {
	nw, err := Open(Config{Name: "wbench", CIDR: netip.MustParsePrefix("10.228.0.0/22"), Upstreams: []string{"127.0.0.1:9"}})
	if err != nil {
		return nil, err
	}
	defer nw.Close()
	var out []time.Duration
	for i := range n {
		id := fmt.Sprintf("b%04d", i)
		a, err := nw.Allocate()
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		nt, err := nw.Attach(context.Background(), id, a, "52:54:00:00:00:01", Policy{}, i%2 == 1)
		if err == nil && i%2 == 0 {
			err = AddressVeth(nt)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, time.Since(t0))
		if err := nw.Detach(id); err != nil {
			return nil, err
		}
		nw.Release(a)
	}
	if err := nw.Prune(nil); err != nil {
		return nil, err
	}
	return out, DropTable("wbench")
}
