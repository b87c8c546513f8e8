// Package chaos kills a wispd with SIGKILL at random moments while its
// sprites are created, checkpointed, restored, forked, put to sleep,
// woken, stopped and started, and checks after every restart that nothing
// was lost and nothing was left behind. The integration test runs a few
// rounds; `wisp bench chaos` runs many.
package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Daemon is the wispd under test and the wisp CLI that talks to it.
type Daemon interface {
	// Wisp runs the CLI and returns its stdout, stderr and exit code.
	Wisp(args ...string) (stdout, stderr string, code int)
	// Kill9AndRestart kills wispd with SIGKILL and starts it again on the
	// same data dir, returning once it answers.
	Kill9AndRestart() error
	// Dir is a folder that every file of the daemon is below (its data
	// dir): its VMM processes name it in their arguments.
	Dir() string
	// NetName prefixes the daemon's network namespaces ("" none).
	NetName() string
}

// Report counts a run. A good run has zeros on its second line.
type Report struct {
	Backend  string `json:"backend"`
	Rounds   int    `json:"rounds"`
	Ops      int64  `json:"operations"`
	CutShort int64  `json:"operations_failed"` // failed, mostly cut short by the kill
	Kills    int    `json:"kills"`

	LostSprites     int      `json:"lost_sprites"`
	LostCheckpoints int      `json:"lost_checkpoints"`
	LostFiles       int      `json:"lost_files"`
	Unusable        int      `json:"unusable"`
	Orphans         int      `json:"orphans"`
	Problems        []string `json:"problems,omitempty"`
	Seconds         float64  `json:"seconds"`
}

// OK reports whether nothing was lost or left.
func (r Report) OK() bool {
	return r.LostSprites+r.LostCheckpoints+r.LostFiles+r.Unusable+r.Orphans == 0 && len(r.Problems) == 0
}

func (r Report) String() string {
	return fmt.Sprintf("%s: %d rounds, %d operations (%d failed, cut short by the kill), %d kills; lost %d sprites, %d checkpoints, %d synced files; %d unusable; %d orphans",
		r.Backend, r.Rounds, r.Ops, r.CutShort, r.Kills, r.LostSprites, r.LostCheckpoints, r.LostFiles, r.Unusable, r.Orphans)
}

// Run makes sprites sprites, then runs rounds rounds of random operations
// and kills, then destroys every sprite and checks nothing is left. It
// stops early when ctx ends. logf, if set, hears each problem.
func Run(ctx context.Context, d Daemon, backend string, sprites, rounds int, logf func(format string, a ...any)) (rep Report, err error) {
	c := &run{d: d, rep: Report{Backend: backend}, logf: logf}
	t0 := time.Now()
	defer func() { rep.Seconds = time.Since(t0).Seconds() }()
	for i := range sprites {
		if err := c.ok("create", fmt.Sprintf("c%d", i)); err != nil {
			return c.rep, err
		}
		if err := c.ok("checkpoint", "create", fmt.Sprintf("c%d", i)); err != nil {
			return c.rep, err
		}
	}
	for round := range rounds {
		if ctx.Err() != nil {
			break
		}
		if err := c.round(round); err != nil {
			return c.rep, err
		}
		c.rep.Rounds++
	}
	list, err := c.list()
	if err != nil {
		return c.rep, err
	}
	for _, s := range list {
		if err := c.ok("destroy", s.Name); err != nil {
			return c.rep, err
		}
	}
	if left := c.leftovers(); len(left) > 0 {
		c.problem("after destroying every sprite: %v", left)
		c.rep.Orphans += len(left)
	}
	return c.rep, nil
}

type run struct {
	d    Daemon
	rep  Report
	n    int // names made
	logf func(string, ...any)
	mu   sync.Mutex
}

func (c *run) problem(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	c.mu.Lock()
	c.rep.Problems = append(c.rep.Problems, msg)
	c.mu.Unlock()
	if c.logf != nil {
		c.logf("%s", msg)
	}
}

func (c *run) ok(args ...string) error {
	out, errOut, code := c.d.Wisp(args...)
	if code != 0 {
		return fmt.Errorf("wisp %s: exit %d: %s %s", strings.Join(args, " "), code, out, errOut)
	}
	return nil
}

type sprite struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	State string `json:"state"`
}

func (c *run) list() ([]sprite, error) {
	out, errOut, code := c.d.Wisp("list", "--json")
	if code != 0 {
		return nil, fmt.Errorf("wisp list: exit %d: %s", code, errOut)
	}
	var l []sprite
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		return nil, fmt.Errorf("wisp list: %w", err)
	}
	return l, nil
}

func (c *run) checkpoints(name string) []string {
	out, _, code := c.d.Wisp("checkpoint", "list", name, "--json")
	if code != 0 {
		return nil
	}
	var l []struct{ ID string }
	json.Unmarshal([]byte(out), &l)
	var ids []string
	for _, ck := range l {
		ids = append(ids, ck.ID)
	}
	return ids
}

// round writes and syncs a marker in every sprite, starts one random
// operation on each, kills the daemon in their midst, restarts it, and
// checks.
func (c *run) round(round int) error {
	mark := fmt.Sprintf("round-%d", round)
	list, err := c.list()
	if err != nil {
		return err
	}
	before := map[string][]string{} // sprite -> its checkpoints
	for _, s := range list {
		out, errOut, code := c.d.Wisp("exec", s.Name, "--user", "root", "--", "sh", "-c", "echo "+mark+" > /root/mark && sync && cat /root/mark")
		if code != 0 || out != mark+"\n" {
			return fmt.Errorf("round %d: %s cannot write its marker: exit %d %q %s", round, s.Name, code, out, errOut)
		}
		before[s.Name] = c.checkpoints(s.Name)
	}
	var wg sync.WaitGroup
	var ops, failed atomic.Int64
	restored := map[string]bool{} // their marker goes back to v1's (none)
	var mu sync.Mutex             // c.n, restored
	pick := func(n string) []string {
		mu.Lock()
		defer mu.Unlock()
		switch rand.IntN(8) {
		case 0:
			return []string{"checkpoint", "create", n}
		case 1:
			restored[n] = true
			return []string{"restore", n, "v1"}
		case 2:
			c.n++
			return []string{"fork", n, "--from", "v1", fmt.Sprintf("f%d", c.n)}
		case 3:
			return []string{"sleep", n}
		case 4:
			return []string{"exec", n, "--", "true"} // wakes or starts it
		case 5:
			return []string{"stop", n}
		case 6:
			return []string{"start", n}
		default:
			c.n++
			return []string{"create", fmt.Sprintf("n%d", c.n)}
		}
	}
	for _, s := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A few operations one after another: the kill meets one of
			// them at a random point.
			for range opsPerSprite {
				op := pick(s.Name)
				ops.Add(1)
				if _, _, code := c.d.Wisp(op...); code != 0 {
					failed.Add(1)
					return // the daemon is gone, or the op was refused
				}
			}
		}()
	}
	// The kill lands at a random moment of the calls (each takes 0.05-3 s).
	time.Sleep(time.Duration(rand.IntN(2000)) * time.Millisecond)
	err = c.d.Kill9AndRestart()
	wg.Wait()
	c.rep.Ops += ops.Load()
	c.rep.CutShort += failed.Load()
	if err != nil {
		return fmt.Errorf("round %d: restart: %w", round, err)
	}
	c.rep.Kills++

	now, err := c.list()
	if err != nil {
		return err
	}
	after := map[string]bool{}
	for _, s := range now {
		after[s.Name] = true
	}
	for _, s := range list {
		if !after[s.Name] {
			c.problem("round %d: sprite %s lost", round, s.Name)
			c.rep.LostSprites++
			continue
		}
		cks := c.checkpoints(s.Name)
		for _, ck := range before[s.Name] {
			if !slices.Contains(cks, ck) {
				c.problem("round %d: checkpoint %s of %s lost", round, ck, s.Name)
				c.rep.LostCheckpoints++
			}
		}
	}
	for _, s := range now {
		out, errOut, code := c.d.Wisp("exec", s.Name, "--user", "root", "--", "sh", "-c", "cat /root/mark 2>/dev/null; true")
		switch {
		case code != 0:
			c.problem("round %d: %s (%s) is not usable after the restart: exit %d %q %s", round, s.Name, s.State, code, out, errOut)
			c.rep.Unusable++
		case before[s.Name] != nil && !restored[s.Name] && out != mark+"\n":
			c.problem("round %d: %s lost its synced marker: %q", round, s.Name, out)
			c.rep.LostFiles++
		}
		if len(c.checkpoints(s.Name)) == 0 { // made in this round
			if err := c.ok("checkpoint", "create", s.Name); err != nil {
				return err
			}
		}
	}
	if left := c.leftovers(); len(left) > 0 {
		c.problem("round %d: left behind after the restart: %v", round, left)
		c.rep.Orphans += len(left)
	}
	return nil
}

// opsPerSprite is how many operations each sprite goes through in a round.
const opsPerSprite = 3

var vmmID = regexp.MustCompile(`wisp-([0-9a-f]{10})\b`)

// leftovers lists what of the daemon runs or stays that no sprite owns:
// VMM and sandbox processes of sprites that do not run, network
// namespaces of sprites that do not exist, loop devices of sprites that
// do not run.
func (c *run) leftovers() []string {
	list, err := c.list()
	if err != nil {
		return []string{err.Error()}
	}
	running, exists := map[string]bool{}, map[string]bool{}
	for _, s := range list {
		exists[s.ID] = true
		if s.State == "running" {
			running[s.ID] = true
		}
	}
	dir := c.d.Dir()
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), dir) {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if !strings.Contains(cmd, "qemu-system") && !strings.Contains(cmd, "runsc") {
			continue
		}
		if m := vmmID.FindStringSubmatch(cmd); m != nil && !running[m[1]] {
			out = append(out, fmt.Sprintf("process %s of sprite id %s", filepath.Base(filepath.Dir(p)), m[1]))
		}
	}
	if prefix := c.d.NetName(); prefix != "" {
		ents, _ := os.ReadDir("/var/run/netns")
		for _, e := range ents {
			if id, ok := strings.CutPrefix(e.Name(), prefix+"-"); ok && !exists[id] {
				out = append(out, "namespace "+e.Name())
			}
		}
	}
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range loops {
		b, _ := os.ReadFile(f)
		file := strings.TrimSpace(string(b))
		if !strings.HasPrefix(file, dir) || strings.HasSuffix(file, "pool.img") {
			continue
		}
		if id := filepath.Base(filepath.Dir(file)); !running[id] {
			out = append(out, "loop device "+filepath.Base(filepath.Dir(filepath.Dir(f)))+" on "+file)
		}
	}
	return out
}
