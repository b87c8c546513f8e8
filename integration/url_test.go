package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/network/nettest"
)

// webScript starts, in a sprite, busybox httpd on 8080 (an index page, a
// CGI that streams server-sent events, waiting for /tmp/go before its
// second event, and a large random file), and on 8081 a busybox nc server
// that answers an HTTP upgrade with 101 and then echoes what it gets.
const webScript = `set -e
mkdir -p /tmp/www/cgi-bin
echo 'hello from web' > /tmp/www/index.html
cat > /tmp/www/cgi-bin/sse <<'EOS'
#!/bin/sh
printf 'Content-Type: text/event-stream\r\n\r\n'
echo 'data: one'; echo
while [ ! -e /tmp/go ]; do usleep 20000; done
echo 'data: two'; echo
EOS
cat > /tmp/ws.sh <<'EOS'
#!/bin/sh
while read -r line; do [ "$line" = "$(printf '\r')" ] && break; [ -z "$line" ] && break; done
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'
exec cat
EOS
chmod +x /tmp/www/cgi-bin/sse /tmp/ws.sh
head -c %d /dev/urandom > /tmp/www/big
httpd -p 8080 -h /tmp/www
nc -ll -p 8081 -e /tmp/ws.sh >/dev/null 2>&1 </dev/null &
sha256sum /tmp/www/big
`

// urlInfo is `wisp url --json`.
type urlInfo struct {
	URL     string `json:"url"`
	PathURL string `json:"path_url"`
	Public  bool   `json:"public"`
	Port    int    `json:"port"`
}

func (d *daemon) url(args ...string) urlInfo {
	d.t.Helper()
	var u urlInfo
	if err := json.Unmarshal([]byte(d.ok(append([]string{"url", "--json"}, args...)...)), &u); err != nil {
		d.t.Fatal(err)
	}
	return u
}

// frontClient is an HTTP client that takes *.localhost to loopback, as
// browsers and curl do, and follows no redirects.
func frontClient(jar http.CookieJar) *http.Client {
	var dialer net.Dialer
	return &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				host, port, _ := net.SplitHostPort(addr)
				if strings.HasSuffix(host, ".localhost") {
					host = "127.0.0.1"
				}
				if host != "127.0.0.1" {
					return nil, fmt.Errorf("test traffic goes to loopback only, not %s", addr)
				}
				return dialer.DialContext(ctx, "tcp4", net.JoinHostPort(host, port))
			},
			MaxIdleConnsPerHost: 200,
		},
	}
}

// get fetches u and returns the status and body.
func get(t *testing.T, c *http.Client, u string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// withPath puts p in u (a URL that may carry a query).
func withPath(t *testing.T, u, p string) string {
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	pu.Path = strings.TrimSuffix(pu.Path, "/") + p
	return pu.String()
}

// rawGet sends a GET of target with Host host to the front door at addr,
// exactly as written.
func rawGet(t *testing.T, addr, host, target string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, host)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("Host %q, path %q: %v", host, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// wakes counts the wakes wispd logged.
func (d *daemon) wakes() int {
	b, _ := os.ReadFile(d.logf.Name())
	return strings.Count(string(b), "sprite awake")
}

// TestURL: on both backends, a sprite's server on 8080 through wispd's
// front door: private (401) unless signed (200; then the cookie alone and
// a bearer header work), public, the path form; server-sent events stream,
// an upgraded connection echoes both ways, a large response arrives whole;
// 502 where nothing listens; a request wakes a sleeping sprite, 100
// concurrent ones cause one wake and all get answered; an open stream
// keeps the sprite awake; a request starts a stopped sprite and waits
// (bounded) for the port.
func TestURL(t *testing.T) {
	for _, backend := range backends() {
		t.Run(backend, func(t *testing.T) {
			d := newDaemon(t, backend, "--url-wait", "3s")
			d.ok("create", "web")
			size := 100 << 20
			out := d.ok("exec", "web", "--", "sh", "-c", fmt.Sprintf(webScript, size))
			lines := strings.Split(strings.TrimSpace(out), "\n")
			wantSum := strings.Fields(lines[len(lines)-1] + " ?")[0]
			c := frontClient(nil)
			plain := d.url("web")
			if plain.Public || !strings.Contains(plain.URL, "web.localhost:") {
				t.Fatalf("wisp url: %+v", plain)
			}
			waitFor(t, 10*time.Second, "httpd listens in the sprite", func() bool {
				code, _ := get(t, c, plain.URL)
				return code == 401
			})

			// Private by default.
			if code, body := get(t, c, plain.URL); code != 401 || !strings.Contains(body, "private") {
				t.Errorf("plain request: %d %q", code, body)
			}
			if code, _ := get(t, c, plain.PathURL); code != 401 {
				t.Errorf("plain request, path form: %d", code)
			}
			// Signed: 200, and then the cookie alone.
			jar, _ := cookiejar.New(nil)
			cj := frontClient(jar)
			signed := d.url("web", "--signed", "--ttl", "10m")
			if code, body := get(t, cj, signed.URL); code != 200 || body != "hello from web\n" {
				t.Fatalf("signed URL: %d %q", code, body)
			}
			if code, body := get(t, cj, plain.URL); code != 200 || body != "hello from web\n" {
				t.Errorf("the cookie without the query: %d %q", code, body)
			}
			if code, _ := get(t, cj, strings.Replace(plain.URL, "web.localhost", "8081.web.localhost", 1)); code != 401 {
				t.Errorf("8080's cookie opened another port: %d", code)
			}
			cred := signed.URL[strings.Index(signed.URL, "_wisp=")+len("_wisp="):]
			if code, _ := get(t, c, plain.URL, "Authorization", "Bearer "+cred); code != 200 {
				t.Errorf("bearer: %d", code)
			}
			if code, body := get(t, c, signed.PathURL); code != 200 || body != "hello from web\n" {
				t.Errorf("signed path form: %d %q", code, body)
			}
			// Public and private again, recorded.
			d.ok("url", "web", "--public")
			if code, _ := get(t, c, plain.URL); code != 200 {
				t.Errorf("public: %d", code)
			}
			if !strings.Contains(d.ok("info", "web"), "public") {
				t.Errorf("wisp info does not say the URL is public")
			}

			// Server-sent events arrive as they are sent.
			resp, err := c.Get(withPath(t, plain.URL, "/cgi-bin/sse"))
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(resp.Body)
			if line, err := br.ReadString('\n'); err != nil || line != "data: one\n" {
				t.Fatalf("first event: %q %v", line, err)
			}
			d.ok("exec", "web", "--", "touch", "/tmp/go")
			rest, _ := io.ReadAll(br)
			resp.Body.Close()
			if string(rest) != "\ndata: two\n\n" {
				t.Errorf("rest of the events: %q", rest)
			}

			// An upgraded connection echoes both ways.
			front := strings.TrimPrefix(strings.Split(plain.URL, "/")[2], "web.localhost")
			conn, err := net.Dial("tcp4", "127.0.0.1"+front)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: 8081.web.localhost%s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", front)
			cr := bufio.NewReader(conn)
			if uresp, err := http.ReadResponse(cr, nil); err != nil || uresp.StatusCode != 101 {
				t.Fatalf("upgrade: %v %v", uresp, err)
			}
			for i := range 3 {
				msg := fmt.Sprintf("ping %d\n", i)
				conn.Write([]byte(msg))
				if got, err := cr.ReadString('\n'); err != nil || got != msg {
					t.Errorf("echo through the upgrade: %q %v", got, err)
				}
			}
			conn.Close()

			// A large response, whole.
			resp, err = c.Get(withPath(t, plain.URL, "/big"))
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			resp.Body.Close()
			if err != nil || n != int64(size) || hex.EncodeToString(h.Sum(nil)) != wantSum {
				t.Errorf("large response: %d bytes, sha256 %x, %v; want %d, %s", n, h.Sum(nil), err, size, wantSum)
			}

			// Nothing listens: 502 saying so.
			if code, body := get(t, c, strings.Replace(plain.URL, "web.localhost", "9.web.localhost", 1)); code != 502 || !strings.Contains(body, "nothing listens") {
				t.Errorf("nothing listening: %d %q", code, body)
			}

			// Host-header and path tricks reach no other sprite (another
			// public one with a server on 8080) and no host service (a server
			// on every host address).
			d.ok("create", "other")
			d.ok("exec", "other", "--", "sh", "-c", "mkdir -p /tmp/www && echo 'hello from other' > /tmp/www/index.html && httpd -p 8080 -h /tmp/www")
			d.ok("url", "other", "--public")
			otherURL := d.url("other").URL
			waitFor(t, 10*time.Second, "other's server answers", func() bool {
				code, body := get(t, c, otherURL)
				return code == 200 && body == "hello from other\n"
			})
			hostPort := nettest.HostServer(t)
			for _, trick := range [][2]string{
				{"web.localhost", "/s/other/"},
				{"127.0.0.1", "/s/web/../other/"},
				{"127.0.0.1", "/s/web/%2e%2e/other/"},
				{"127.0.0.1", "/s/web%2F..%2Fother/"},
				{"127.0.0.1", "/s/other%2F/"},
				{"web.localhost.other.localhost", "/"},
				{"other.localhost.", "/"},
				{"other%2elocalhost", "/"},
				{"evil.example", "/s/other/"},
				{fmt.Sprintf("%d.web.localhost", hostPort), "/"},
				{fmt.Sprintf("127.0.0.1:%d", hostPort), "/"},
				{"localhost", fmt.Sprintf("/s/%d.web/", hostPort)},
				{"127.0.0.1", "/s/127.0.0.1/"},
				{"127.0.0.1", "/s/" + d.netInfo("other").Address + "/"},
			} {
				code, body := rawGet(t, "127.0.0.1"+front, trick[0], trick[1])
				t.Logf("Host %q, path %q: %d %s", trick[0], trick[1], code, strings.SplitN(body, "\n", 2)[0])
				if strings.Contains(body, "hello from other") || strings.Contains(body, "hello from the host") {
					t.Errorf("Host %q, path %q: %d %q", trick[0], trick[1], code, body)
				}
			}
			d.ok("destroy", "other")

			// From here under --deny-all: the host reaches its sprites
			// whatever their egress policy.
			d.ok("policy", "set", "web", "--deny-all")
			if code, _ := get(t, c, plain.URL); code != 200 {
				t.Errorf("public, deny-all: %d", code)
			}

			// A request wakes a sleeping sprite.
			d.ok("sleep", "web")
			w0 := d.wakes()
			if code, body := get(t, c, plain.URL); code != 200 || body != "hello from web\n" {
				t.Errorf("request to a sleeping sprite: %d %q", code, body)
			}
			if s := d.info("web").State; s != "running" || d.wakes() != w0+1 {
				t.Errorf("after a request: state %s, %d wakes", s, d.wakes()-w0)
			}
			// 100 concurrent requests during a wake: one wake, all answered.
			d.ok("sleep", "web")
			w0 = d.wakes()
			var wg sync.WaitGroup
			codes := make(chan int, 100)
			for range 100 {
				wg.Go(func() {
					resp, err := c.Get(plain.URL)
					if err != nil {
						codes <- 0
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					codes <- resp.StatusCode
				})
			}
			wg.Wait()
			close(codes)
			bad := map[int]int{}
			for code := range codes {
				if code != 200 {
					bad[code]++
				}
			}
			if len(bad) > 0 || d.wakes() != w0+1 {
				t.Errorf("100 requests during a wake: non-200s %v, %d wakes", bad, d.wakes()-w0)
			}

			// An open stream keeps the sprite awake; it sleeps once closed.
			d.ok("exec", "web", "--", "rm", "/tmp/go")
			d.ok("set", "web", "idle=2s")
			resp, err = c.Get(withPath(t, plain.URL, "/cgi-bin/sse"))
			if err != nil {
				t.Fatal(err)
			}
			br = bufio.NewReader(resp.Body)
			br.ReadString('\n')
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
				if s := d.info("web").State; s != "running" {
					t.Fatalf("the sprite went %s under an open stream", s)
				}
			}
			resp.Body.Close()
			waitFor(t, 30*time.Second, "the sprite sleeps once the stream is closed", func() bool { return d.info("web").State == "sleeping" })
			d.ok("set", "web", "idle=default")

			// A request starts a stopped sprite; nothing serves 8080 after a
			// cold boot, so it waits (--url-wait 3s) and says so.
			d.ok("stop", "web")
			t0 := time.Now()
			code, body := get(t, c, plain.URL)
			if code != 502 || !strings.Contains(body, "nothing listened") || d.info("web").State != "running" {
				t.Errorf("request to a stopped sprite: %d %q, state %s", code, body, d.info("web").State)
			}
			t.Logf("cold start by a request, then the 3 s wait: %s", time.Since(t0).Round(time.Millisecond))

			// Private again; the signed URL still opens it.
			d.ok("exec", "web", "--", "httpd", "-p", "8080", "-h", "/tmp/www")
			d.ok("url", "web", "--private")
			waitFor(t, 10*time.Second, "the restarted httpd answers the signed URL", func() bool {
				code, _ := get(t, c, signed.URL)
				return code == 200
			})
			if code, _ := get(t, c, plain.URL); code != 401 {
				t.Errorf("private again: %d", code)
			}
		})
	}
}

// proxy starts `wisp proxy NAME SPECS...` for the rest of the test and
// returns the local addresses it forwards, in order.
func (d *daemon) proxy(name string, specs ...string) []string {
	d.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "wisp"), append([]string{"proxy", name}, specs...)...)
	cmd.Env = append(os.Environ(), "WISP_SOCKET="+d.sock)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		d.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
		if d.t.Failed() {
			d.t.Logf("wisp proxy stderr: %s", errb.String())
		}
	})
	sc := bufio.NewScanner(out)
	var addrs []string
	for len(addrs) < len(specs) && sc.Scan() {
		f := strings.Fields(sc.Text()) // forwarding ADDR -> NAME:PORT
		if len(f) != 4 || f[0] != "forwarding" {
			d.t.Fatalf("wisp proxy said %q", sc.Text())
		}
		addrs = append(addrs, f[1])
	}
	if len(addrs) < len(specs) {
		d.t.Fatalf("wisp proxy ended: %s", errb.String())
	}
	return addrs
}

// TestProxy: on both backends, `wisp proxy` forwards local ports to a
// sprite's servers: a page, a large response whole, an upgraded connection
// echoing both ways; it wakes a sleeping sprite with one wake, works under
// --deny-all, and ends a connection to a port where nothing listens.
func TestProxy(t *testing.T) {
	for _, backend := range backends() {
		t.Run(backend, func(t *testing.T) {
			d := newDaemon(t, backend)
			d.ok("create", "web")
			size := 32 << 20
			lines := strings.Split(strings.TrimSpace(d.ok("exec", "web", "--", "sh", "-c", fmt.Sprintf(webScript, size))), "\n")
			wantSum := strings.Fields(lines[len(lines)-1] + " ?")[0]
			addrs := d.proxy("web", "0:8080", "0:8081", "0:9")
			page := "http://" + addrs[0] + "/"
			c := frontClient(nil)
			waitFor(t, 10*time.Second, "the page through the proxy", func() bool {
				code, body := get(t, c, page)
				return code == 200 && body == "hello from web\n"
			})

			resp, err := c.Get(page + "big")
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			resp.Body.Close()
			if err != nil || n != int64(size) || hex.EncodeToString(h.Sum(nil)) != wantSum {
				t.Errorf("large response: %d bytes, sha256 %x, %v; want %d, %s", n, h.Sum(nil), err, size, wantSum)
			}

			conn, err := net.Dial("tcp4", addrs[1])
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprint(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			cr := bufio.NewReader(conn)
			if uresp, err := http.ReadResponse(cr, nil); err != nil || uresp.StatusCode != 101 {
				t.Fatalf("upgrade through the proxy: %v %v", uresp, err)
			}
			for i := range 3 {
				msg := fmt.Sprintf("ping %d\n", i)
				conn.Write([]byte(msg))
				if got, err := cr.ReadString('\n'); err != nil || got != msg {
					t.Errorf("echo through the proxy: %q %v", got, err)
				}
			}
			conn.Close()

			d.ok("policy", "set", "web", "--deny-all")
			d.ok("sleep", "web")
			w0 := d.wakes()
			var wg sync.WaitGroup
			codes := make(chan int, 20)
			for range 20 {
				wg.Go(func() {
					code, _ := get(t, c, page)
					codes <- code
				})
			}
			wg.Wait()
			close(codes)
			for code := range codes {
				if code != 200 {
					t.Errorf("request through the proxy to a sleeping, deny-all sprite: %d", code)
				}
			}
			if d.wakes() != w0+1 {
				t.Errorf("20 connections to a sleeping sprite caused %d wakes", d.wakes()-w0)
			}

			// Nothing listens on 9: the connection ends without a byte.
			conn, err = net.Dial("tcp4", addrs[2])
			if err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			if b, err := io.ReadAll(conn); err != nil || len(b) != 0 {
				t.Errorf("a port where nothing listens: %q %v", b, err)
			}
			conn.Close()
		})
	}
}
