package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/api"
)

// Targets of the front door (issue 10).
const (
	targetURLAddedMS     = 1   // added to a request by the front door
	targetWakeTTFBGVisor = 250 // wake-on-HTTP to the first byte
)

func newBenchURL(e *env) *cobra.Command {
	var f benchFlags
	var sizeMiB int
	c := &cobra.Command{
		Use:   "url",
		Short: "Measure the URL front door and wisp proxy: added latency, wake-on-HTTP, throughput",
		Long: `Measure the front door of the running wispd (run it on the daemon's host),
on a sprite serving busybox httpd on 8080:

  direct_request   GET of a small page straight at the sprite's address
  url_request      the same GET through the front door (a bearer credential)
  url_added        url_request minus direct_request, pairwise (target 1 ms)
  wake_ttfb        a GET through the front door to a sleeping sprite: time
                   to the response's first byte, the wake included
  wake_api         for comparison: the wake alone (the API's start of a
                   sleeping sprite)
  direct/url_throughput  one --size MiB response, straight and through it
  proxy_throughput       the same through wispd's connect (wisp proxy's path)

busybox httpd closes every connection, so both paths pay a TCP connect to
the sprite per request.`,
		Args: cobra.NoArgs,
		RunE: f.each(e, "url", func(ctx context.Context, b string) (BenchReport, error) { return benchURL(ctx, e, f, b, sizeMiB) }),
	}
	f.bind(c)
	c.Flags().IntVar(&sizeMiB, "size", 64, "MiB of the throughput response")
	return c
}

func benchURL(ctx context.Context, e *env, f benchFlags, backend string, sizeMiB int) (BenchReport, error) {
	c := e.client()
	rep := BenchReport{Image: f.img, Runs: f.runs, At: time.Now().UTC()}
	progress := func(format string, a ...any) { fmt.Fprintf(e.stderr, "bench: "+format+"\n", a...) }
	name := "bench-url-" + randSuffix()
	sp, err := c.Create(ctx, api.CreateRequest{Name: name, Image: f.img, Backend: backend, IdleSeconds: -1, MemoryMiB: 256})
	if err != nil {
		return rep, err
	}
	defer c.Sprite(name).Destroy(context.WithoutCancel(ctx))
	rep.Backend, rep.Accel = sp.Backend, sp.Accel
	if sp.Address == "" {
		return rep, fmt.Errorf("sprite %s has no network (see `wisp doctor`)", name)
	}
	script := fmt.Sprintf("mkdir -p /tmp/www && echo ok > /tmp/www/index.html && head -c %d /dev/zero > /tmp/www/big && httpd -p 8080 -h /tmp/www", sizeMiB<<20)
	if err := benchRun(ctx, c, name, nil, "sh", "-c", script); err != nil {
		return rep, err
	}
	u, err := c.Sprite(name).URL(ctx, api.URLRequest{Port: 8080, Signed: true, TTLSeconds: 3600})
	if err != nil {
		return rep, err
	}
	front, cred, _ := strings.Cut(u.URL, "?_wisp=")
	direct := "http://" + net.JoinHostPort(sp.Address, "8080") + "/"
	hc := benchHTTPClient()
	fetch := func(url string) (time.Duration, int64, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+cred)
		t0 := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			return 0, 0, err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return time.Since(t0), n, err
	}
	ready := time.Now().Add(10 * time.Second)
	for {
		if _, _, err := fetch(direct); err == nil {
			break
		} else if time.Now().After(ready) {
			return rep, fmt.Errorf("httpd in the sprite does not answer: %w", err)
		}
		time.Sleep(50 * time.Millisecond) // httpd is starting
	}

	// Requests, interleaved so both paths see the same machine.
	n := f.runs * 40
	var viaDoor, straight, added []float64
	for i := range n + 20 {
		dd, _, err := fetch(direct)
		if err != nil {
			return rep, err
		}
		fd, _, err := fetch(front)
		if err != nil {
			return rep, err
		}
		if i >= 20 { // warm-up
			straight, viaDoor, added = append(straight, ms(dd)), append(viaDoor, ms(fd)), append(added, ms(fd)-ms(dd))
		}
	}
	progress("%d requests each: direct p50 %.3f ms, front door p50 %.3f ms, added p50 %.3f ms",
		n, quantile(straight, 0.5), quantile(viaDoor, 0.5), quantile(added, 0.5))

	// Throughput of one large response.
	var tDirect, tDoor []float64
	for range f.runs {
		for _, p := range []struct {
			url string
			out *[]float64
		}{{direct + "big", &tDirect}, {front + "big", &tDoor}} {
			d, got, err := fetch(p.url)
			if err != nil {
				return rep, err
			}
			if got != int64(sizeMiB)<<20 {
				return rep, fmt.Errorf("GET %s: %d bytes, want %d", p.url, got, sizeMiB<<20)
			}
			*p.out = append(*p.out, float64(got)/d.Seconds()/1e6)
		}
	}
	// The same through wispd's connect, what wisp proxy relays over.
	var tProxy []float64
	for range f.runs {
		conn, err := c.Sprite(name).Connect(ctx, 8080)
		if err != nil {
			return rep, err
		}
		t0 := time.Now()
		fmt.Fprint(conn, "GET /big HTTP/1.0\r\n\r\n")
		got, err := io.Copy(io.Discard, conn)
		el := time.Since(t0)
		conn.Close()
		if err != nil || got < int64(sizeMiB)<<20 {
			return rep, fmt.Errorf("through connect: %d bytes, %v", got, err)
		}
		tProxy = append(tProxy, float64(got)/el.Seconds()/1e6)
	}
	progress("%d MiB response: direct %.0f MB/s, front door %.0f MB/s, proxy %.0f MB/s", sizeMiB, quantile(tDirect, 0.5), quantile(tDoor, 0.5), quantile(tProxy, 0.5))

	// Wake on HTTP: time to the first byte of a request to a sleeping
	// sprite; and, for comparison, a wake through the API alone.
	var wake, wakeAPI []float64
	for range f.runs {
		if _, err := c.Sprite(name).Sleep(ctx); err != nil {
			return rep, err
		}
		t0 := time.Now()
		if _, err := c.Sprite(name).Start(ctx); err != nil {
			return rep, err
		}
		wakeAPI = append(wakeAPI, ms(time.Since(t0)))
	}
	for i := range f.runs {
		if _, err := c.Sprite(name).Sleep(ctx); err != nil {
			return rep, err
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", front, nil)
		req.Header.Set("Authorization", "Bearer "+cred)
		t0 := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			return rep, err
		}
		var one [1]byte
		_, err = io.ReadFull(resp.Body, one[:])
		el := time.Since(t0)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			return rep, fmt.Errorf("request to the sleeping sprite: %s %v", resp.Status, err)
		}
		wake = append(wake, ms(el))
		progress("wake %d/%d: first byte after %.0f ms", i+1, f.runs, ms(el))
	}
	progress("wake through the API (wisp start of a sleeping sprite) p50 %.0f ms", quantile(wakeAPI, 0.5))
	wakeTarget := 0.0
	if sp.Backend == "gvisor" {
		wakeTarget = targetWakeTTFBGVisor
	}
	rep.Metrics = []Metric{
		newMetric("direct_request", "ms", straight, 0, "lower"),
		newMetric("url_request", "ms", viaDoor, 0, "lower"),
		newMetric("url_added", "ms", added, targetURLAddedMS, "lower"),
		newMetric("wake_ttfb", "ms", wake, wakeTarget, "lower"),
		newMetric("wake_api", "ms", wakeAPI, 0, "lower"),
		newMetric("direct_throughput", "MB/s", tDirect, 0, "higher"),
		newMetric("url_throughput", "MB/s", tDoor, 0, "higher"),
		newMetric("proxy_throughput", "MB/s", tProxy, 0, "higher"),
	}
	return rep, nil
}

// benchHTTPClient takes *.localhost to loopback, as browsers and curl do,
// and keeps connections to the front door alive.
func benchHTTPClient() *http.Client {
	var d net.Dialer
	return &http.Client{Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, port, err := net.SplitHostPort(addr); err == nil && strings.HasSuffix(host, ".localhost") {
				addr = net.JoinHostPort("127.0.0.1", port)
			}
			return d.DialContext(ctx, "tcp4", addr)
		},
		DisableCompression:  true,
		MaxIdleConnsPerHost: 4,
	}}
}
