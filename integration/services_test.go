package integration

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// serviceJSON is one entry of `wisp service list --json`.
type serviceJSON struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	Pid      int    `json:"pid"`
	Restarts int    `json:"restarts"`
	Port     int    `json:"port"`
	LastExit string `json:"last_exit"`
	LogBytes int64  `json:"log_bytes"`
}

func (d *daemon) services(name string) map[string]serviceJSON {
	d.t.Helper()
	var list []serviceJSON
	if err := json.Unmarshal([]byte(d.ok("service", "list", name, "--json")), &list); err != nil {
		d.t.Fatal(err)
	}
	out := map[string]serviceJSON{}
	for _, s := range list {
		out[s.Name] = s
	}
	return out
}

// webService serves "hello-$GREETING" on port 3000 with busybox httpd.
const webService = `mkdir -p /tmp/www && echo "hello-$GREETING" > /tmp/www/index.html && exec httpd -f -p 3000 -h /tmp/www`

// TestServices, on both backends: a service runs after add (as the sprite
// user, with its env), the URL serves its --port, it is started again
// after it is killed inside the guest (restarts rise), its output is kept
// bounded, it comes back after stop+start, after a disk-only restore and
// after a use (exec) starts the stopped sprite; 20 concurrent execs on a
// stopped sprite cause one boot; rm stops it; bad input is refused and
// changes nothing.
func TestServices(t *testing.T) {
	for _, backend := range backends() {
		t.Run(backend, func(t *testing.T) {
			d := newDaemon(t, backend)
			d.ok("create", "svc")
			d.ok("url", "svc", "--public")
			out := d.ok("service", "add", "svc", "web", "--cmd", webService, "--env", "GREETING=svc", "--port", "3000")
			if !strings.Contains(out, "running") {
				t.Errorf("service add: %q", out)
			}
			c := frontClient(nil)
			u := d.url("svc")
			if u.Port != 3000 || !strings.Contains(u.URL, "//svc.localhost:") {
				t.Errorf("wisp url of a sprite with a service on 3000: %+v", u)
			}
			serves := func(what string) {
				t.Helper()
				waitFor(t, 30*time.Second, "the URL serves the service "+what, func() bool {
					code, body := get(t, c, u.URL)
					return code == 200 && body == "hello-svc\n"
				})
			}
			serves("after add")
			s := d.services("svc")["web"]
			if s.State != "running" || s.Pid == 0 || s.Restarts != 0 || s.Port != 3000 {
				t.Errorf("after add: %+v", s)
			}
			if owner := d.ok("exec", "svc", "--", "stat", "-c", "%U", "/tmp/www/index.html"); strings.TrimSpace(owner) != "sprite" {
				t.Errorf("the service ran as %q, want sprite", owner)
			}

			// Killed inside the guest: started again.
			d.ok("exec", "svc", "--", "kill", "-9", strconv.Itoa(s.Pid))
			waitFor(t, 30*time.Second, "the killed service runs again", func() bool {
				n := d.services("svc")["web"]
				return n.State == "running" && n.Restarts == 1 && n.Pid != s.Pid
			})
			if n := d.services("svc")["web"]; n.LastExit != "signal SIGKILL" {
				t.Errorf("last exit after kill -9: %q", n.LastExit)
			}
			serves("after kill -9")

			// Output is kept, bounded: a chatty service writes megabytes,
			// its logs are the last 256 KiB.
			d.ok("service", "add", "svc", "chatty", "--cmd", `i=0; while :; do echo "line-$i-................................................"; i=$((i+1)); done`)
			waitFor(t, 90*time.Second, "the chatty service writes 1 MiB", func() bool {
				return d.services("svc")["chatty"].LogBytes > 1<<20
			})
			logs := d.ok("service", "logs", "svc", "chatty")
			lines := strings.Split(strings.TrimSpace(logs), "\n")
			if len(logs) > 256<<10 || len(logs) < 200<<10 || !strings.HasPrefix(lines[len(lines)-1], "line-") {
				t.Errorf("logs of the chatty service: %d bytes (want 200-256 KiB), last line %q", len(logs), lines[len(lines)-1])
			}
			if first, _ := strconv.Atoi(strings.Split(lines[1], "-")[1]); first < 10000 {
				t.Errorf("the kept logs start at line %d: not the latest", first)
			}
			chatty := d.services("svc")["chatty"].Pid
			d.ok("service", "rm", "svc", "chatty")
			if _, ok := d.services("svc")["chatty"]; ok {
				t.Errorf("chatty still listed after rm")
			}
			if _, _, code := d.wisp(nil, "exec", "svc", "--", "kill", "-0", strconv.Itoa(chatty)); code == 0 {
				t.Errorf("chatty's process %d still runs after rm", chatty)
			}
			d.fails("no service", "service", "logs", "svc", "chatty")

			// Bad input is refused and changes nothing.
			d.fails("already has a service", "service", "add", "svc", "web", "--cmd", "true")
			d.fails("invalid service name", "service", "add", "svc", "Bad/Name", "--cmd", "true")
			d.fails("out of range", "service", "add", "svc", "p", "--cmd", "true", "--port", "70000")
			d.fails("already has port", "service", "add", "svc", "p", "--cmd", "true", "--port", "3000")
			d.fails("KEY=VALUE", "service", "add", "svc", "p", "--cmd", "true", "--env", "=x")
			d.fails("--cmd is required", "service", "add", "svc", "p")
			d.fails("no service", "service", "rm", "svc", "nope")
			d.fails("not found", "service", "list", "nosuch")
			if l := d.services("svc"); len(l) != 1 {
				t.Errorf("after refused adds: %+v", l)
			}

			// Stop + start: back.
			d.ok("stop", "svc")
			if s := d.services("svc")["web"]; s.State != "stopped" {
				t.Errorf("service of a stopped sprite: %+v", s)
			}
			d.ok("start", "svc")
			if s := d.services("svc")["web"]; s.State != "running" || s.Restarts != 0 {
				t.Errorf("after stop+start: %+v", s)
			}
			serves("after stop+start")

			// A sleep keeps it running: the same process after the wake.
			before := d.services("svc")["web"]
			d.ok("sleep", "svc")
			if s := d.services("svc")["web"]; s.State != "sleeping" {
				t.Errorf("service of a sleeping sprite: %+v", s)
			}
			serves("after a wake")
			if s := d.services("svc")["web"]; s.Pid != before.Pid || s.Restarts != before.Restarts {
				t.Errorf("after sleep and wake: %+v, before %+v: want the same process", s, before)
			}

			// A fork has its parent's services, running.
			d.ok("fork", "svc", "svc2")
			if s := d.services("svc2")["web"]; s.State != "running" || s.Port != 3000 {
				t.Errorf("the fork's service: %+v", s)
			}
			d.ok("destroy", "svc2")

			// A disk-only checkpoint and its restore: back.
			d.ok("checkpoint", "create", "svc")
			d.ok("restore", "svc", "v1")
			if s := d.services("svc")["web"]; s.State != "running" {
				t.Errorf("after a disk-only restore: %+v", s)
			}
			serves("after a disk-only restore")

			// Any use starts a stopped sprite: 20 concurrent execs, one
			// boot (they all see the same boot), and its service runs.
			bootID := strings.TrimSpace(d.ok("exec", "svc", "--", "cat", "/proc/sys/kernel/random/boot_id"))
			d.ok("stop", "svc")
			var wg sync.WaitGroup
			ids := make([]string, 20)
			for i := range ids {
				wg.Go(func() {
					out, errOut, code := d.wisp(nil, "exec", "svc", "--", "cat", "/proc/sys/kernel/random/boot_id")
					if code != 0 {
						t.Errorf("exec %d on a stopped sprite: exit %d: %s", i, code, errOut)
					}
					ids[i] = strings.TrimSpace(out)
				})
			}
			wg.Wait()
			for i, id := range ids {
				if id == "" || id == bootID || id != ids[0] {
					t.Errorf("exec %d saw boot %q (first %q, before the stop %q): want one new boot for all", i, id, ids[0], bootID)
				}
			}
			serves("after an exec started the sprite")
			d.ok("service", "rm", "svc", "web")
			waitFor(t, 10*time.Second, "nothing listens on 3000 after rm", func() bool {
				code, _ := get(t, c, d.url("svc", "--port", "3000").URL)
				return code == 502
			})
			if u := d.url("svc"); u.Port != 8080 {
				t.Errorf("URL port without services: %d, want 8080", u.Port)
			}
		})
	}
}

// TestKill9DuringLifecycle: kill -9 of the daemon while stop, start and
// restore calls run on several sprites leaves every sprite usable with no
// manual `wisp start`: an exec works (starting it if it ended stopped) and
// its service runs. WISP_KILL9_ROUNDS makes a longer run.
func TestKill9DuringLifecycle(t *testing.T) {
	rounds := 5
	if n, err := strconv.Atoi(os.Getenv("WISP_KILL9_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	for _, backend := range backends() {
		t.Run(backend, func(t *testing.T) {
			d := newDaemon(t, backend)
			names := []string{"k1", "k2", "k3"}
			for _, n := range names {
				d.ok("create", n)
				d.ok("service", "add", n, "tick", "--cmd", "while :; do date > /tmp/tick; sleep 1; done")
				d.ok("checkpoint", "create", n)
			}
			stuck := 0 // not running after a start or restore was cut short
			for round := range rounds {
				var wg sync.WaitGroup
				ops := map[string]string{}
				for _, n := range names {
					op := [][]string{{"stop", n}, {"start", n}, {"restore", n, "v1"}}[rand.IntN(3)]
					ops[n] = op[0]
					wg.Go(func() { d.wisp(nil, op...) })
				}
				// Not a wait for a condition: the kill lands at a random
				// moment of the calls (a boot takes 0.1-2 s here).
				time.Sleep(time.Duration(rand.IntN(1500)) * time.Millisecond)
				d.kill9AndRestart()
				wg.Wait()
				for _, n := range names {
					st := d.info(n).State
					if st != "running" && ops[n] != "stop" {
						stuck++
					}
					if out, errOut, code := d.wisp(nil, "exec", n, "--", "echo", "ok"); code != 0 || out != "ok\n" {
						t.Errorf("round %d: %s (state %s after the restart) is not usable: exit %d %q %s", round, n, st, code, out, errOut)
						continue
					}
					waitFor(t, 30*time.Second, fmt.Sprintf("round %d: %s's service runs", round, n), func() bool {
						return d.services(n)["tick"].State == "running"
					})
				}
			}
			t.Logf("%s: %d of %d sprite-rounds were left not running by a start or restore the kill cut short; every sprite answered its next exec (no wisp start)", backend, stuck, rounds*len(names))
		})
	}
}
