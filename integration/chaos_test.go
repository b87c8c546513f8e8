package integration

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/chaos"
)

// chaosDaemon is the test harness's daemon as chaos.Run drives it.
type chaosDaemon struct{ d *daemon }

func (c chaosDaemon) Wisp(args ...string) (string, string, int) { return c.d.wisp(nil, args...) }
func (c chaosDaemon) Kill9AndRestart() error                    { c.d.kill9AndRestart(); return nil }
func (c chaosDaemon) Dir() string                               { return c.d.dir }
func (c chaosDaemon) NetName() string                           { return testNetName }

// TestChaos kills the daemon with SIGKILL at random moments while sprites
// are created, checkpointed, restored, forked, put to sleep, woken,
// stopped and started, on each backend; after every restart no sprite,
// checkpoint or synced file is lost, every sprite answers an exec with no
// manual step, and no VMM, sandbox, namespace or loop device is left that
// no sprite owns (see internal/chaos). WISP_CHAOS_ROUNDS sets the rounds
// (default 3; `wisp bench chaos` runs long ones).
func TestChaos(t *testing.T) {
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("WISP_CHAOS_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	for _, backend := range backends() {
		t.Run(backend, func(t *testing.T) {
			d := newDaemon(t, backend)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			defer cancel()
			rep, err := chaos.Run(ctx, chaosDaemon{d}, backend, 3, rounds, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(rep)
			if !rep.OK() || rep.Rounds != rounds {
				t.Errorf("chaos: %s\n%v", rep, rep.Problems)
			}
		})
	}
}
