package gvisor

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
)

func TestZZTiming(t *testing.T) {
	if os.Getenv("WISP_TIMING") == "" {
		t.Skip()
	}
	f := fixture(t)
	var starts, execs, stops []time.Duration
	for i := range 10 {
		spec := f.NewSpec(t, "tm")
		_ = i
		t0 := time.Now()
		inst, err := f.Driver.Start(context.Background(), spec)
		if err != nil {
			t.Fatal(err)
		}
		starts = append(starts, time.Since(t0))
		for range 10 {
			t1 := time.Now()
			e, err := inst.Agent().Exec(context.Background(), proto.ExecRequest{Argv: []string{"true"}}, agent.ExecIO{})
			if err != nil || e.Code != 0 {
				t.Fatal(err, e)
			}
			execs = append(execs, time.Since(t1))
		}
		t2 := time.Now()
		inst.Stop(context.Background())
		stops = append(stops, time.Since(t2))
	}
	med := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	t.Logf("start->agent ready: median %v (min %v max %v)", med(starts), starts[0], starts[len(starts)-1])
	t.Logf("exec true: median %v (min %v max %v) n=%d", med(execs), execs[0], execs[len(execs)-1], len(execs))
	t.Logf("stop: median %v (min %v max %v)", med(stops), stops[0], stops[len(stops)-1])
}
