package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/network/nettest"
)

// netScript runs inside the sprite: DNS queries to the gateway, connects
// to the outside host, and one stream from it; JSON out.
const netScript = `
import json, socket, struct, sys, time
gw, out, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
q = struct.pack('>HHHHHH', 7, 0x100, 1, 0, 0, 0) + b'\x09localhost\x00' + struct.pack('>HH', 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
dns = []
for i in range(n):
    t = time.perf_counter(); s.sendto(q, (gw, 53)); s.recv(512); dns.append((time.perf_counter() - t) * 1000)
conn = []
for i in range(n):
    t = time.perf_counter(); k = socket.create_connection((out, 80), 2); conn.append((time.perf_counter() - t) * 1000); k.close()
k = socket.create_connection((out, 80), 5)
k.sendall(b'GET /bytes?n=%d HTTP/1.0\r\n\r\n' % size)
t = time.perf_counter(); got = 0
while True:
    b = k.recv(1 << 20)
    if not b: break
    got += len(b)
el = time.perf_counter() - t
print(json.dumps({"dns_ms": dns, "connect_ms": conn, "mbs": got / el / 1e6, "bytes": got}))
`

func benchNet(ctx context.Context, e *env, f benchFlags, backend string, sizeMiB int) (BenchReport, error) {
	c := e.client()
	rep := BenchReport{Image: f.img, Runs: f.runs, At: time.Now().UTC()}
	progress := func(format string, a ...any) { fmt.Fprintf(e.stderr, "bench: "+format+"\n", a...) }
	if os.Getuid() != 0 {
		return rep, fmt.Errorf("bench net makes network namespaces: run it as root on the daemon's host")
	}

	// What networking adds to a create, on a table of the bench's own.
	setup, err := c.BenchNetSetup(ctx, f.runs*4)
	if err != nil {
		return rep, fmt.Errorf("network setup: %w", err)
	}
	progress("network setup p50 %.2f ms (%d samples)", quantile(setup, 0.5), len(setup))

	dir, err := os.MkdirTemp("", "wisp-bench-net")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	out, stop, err := nettest.StartOutside(netip.Prefix{}, dir)
	if err != nil {
		return rep, fmt.Errorf("outside host: %w", err)
	}
	defer stop()
	_ = out // the sprite reaches it by address; its hosts and DNS are for tests

	name := "bench-net-" + randSuffix()
	sp, err := c.Create(ctx, api.CreateRequest{Name: name, Image: f.img, Backend: backend, IdleSeconds: -1, MemoryMiB: 1024, DiskGiB: 10})
	if err != nil {
		return rep, err
	}
	defer c.Sprite(name).Destroy(context.WithoutCancel(ctx))
	rep.Backend, rep.Accel, rep.Image = sp.Backend, sp.Accel, sp.Image
	if sp.Address == "" {
		return rep, fmt.Errorf("sprite %s has no network (see `wisp doctor`)", name)
	}
	gw := netip.MustParseAddr(sp.Address).Prev().String()
	var mbs, dns, conn []float64
	hasPython := benchRun(ctx, c, name, nil, "sh", "-c", "command -v python3") == nil
	for i := range f.runs {
		if hasPython {
			var buf bytes.Buffer
			if err := benchRun(ctx, c, name, &buf, "python3", "-c", netScript, gw, nettest.OutsideIP.String(), "50", fmt.Sprint(sizeMiB<<20)); err != nil {
				return rep, err
			}
			var r struct {
				DNS     []float64 `json:"dns_ms"`
				Connect []float64 `json:"connect_ms"`
				MBs     float64   `json:"mbs"`
				Bytes   int64     `json:"bytes"`
			}
			if err := json.Unmarshal(buf.Bytes(), &r); err != nil || r.Bytes < int64(sizeMiB)<<20 {
				return rep, fmt.Errorf("in-guest measurement: %v (%q)", err, buf.String())
			}
			dns, conn, mbs = append(dns, r.DNS...), append(conn, r.Connect...), append(mbs, r.MBs)
			progress("run %d/%d: %.0f MB/s, connect p50 %.2f ms, DNS p50 %.2f ms", i+1, f.runs, r.MBs, quantile(r.Connect, 0.5), quantile(r.DNS, 0.5))
			continue
		}
		script := fmt.Sprintf(`printf 'GET /bytes?n=%d HTTP/1.0\r\n\r\n' | nc %s 80 | wc -c`, sizeMiB<<20, nettest.OutsideIP)
		var buf bytes.Buffer
		t0 := time.Now()
		if err := benchRun(ctx, c, name, &buf, "sh", "-c", script); err != nil {
			return rep, err
		}
		el := time.Since(t0)
		var got int64
		fmt.Sscan(strings.TrimSpace(buf.String()), &got)
		if got < int64(sizeMiB)<<20 {
			return rep, fmt.Errorf("throughput sample got %d bytes", got)
		}
		mbs = append(mbs, float64(got)/el.Seconds()/1e6)
		progress("run %d/%d: %.0f MB/s (busybox nc)", i+1, f.runs, mbs[i])
	}
	tput := 0.0
	if backend == "gvisor" || sp.Backend == "gvisor" {
		tput = targetNetGVisorMBs
	}
	rep.Metrics = []Metric{
		newMetric("net_setup", "ms", setup, targetNetSetupMS, "lower"),
		newMetric("tcp_throughput", "MB/s", mbs, tput, "higher"),
	}
	if hasPython {
		rep.Metrics = append(rep.Metrics,
			newMetric("tcp_connect", "ms", conn, 0, "lower"),
			newMetric("dns_query", "ms", dns, targetDNSms, "lower"))
	}
	return rep, nil
}
