package meter

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetrics: the registry serves each sprite's totals and gauges as the
// meter has them, sprites by state, and the operations observed.
func TestMetrics(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)}
	m := open(t, filepath.Join(t.TempDir(), "usage.db"), c)
	defer m.Close()
	r := Reading{ID: "a1", Name: "a", State: "running", Running: true, CPUEpoch: "1@1", CPU: 4 * time.Second,
		Memory: 1 << 30, NetEpoch: "3", NetRx: 2048, NetTx: 1024, Storage: 1 << 20}
	if err := m.Tick(context.Background(), source(func(bool) []Reading { return []Reading{r} }), nil); err != nil {
		t.Fatal(err)
	}
	x := NewMetrics(m, func() map[string]int { return map[string]int{"running": 1, "sleeping": 2} })
	x.Observe("wake", 300*time.Millisecond, nil)
	x.Observe("create", 2*time.Second, errors.New("boom"))
	x.Request("GET /v1/sprites", "GET", "200")
	want := `
# HELP wisp_sprite_cpu_seconds_total CPU time a sprite's VMM or sandbox used.
# TYPE wisp_sprite_cpu_seconds_total counter
wisp_sprite_cpu_seconds_total{sprite="a"} 4
# HELP wisp_sprite_network_receive_bytes_total Bytes the sprite received.
# TYPE wisp_sprite_network_receive_bytes_total counter
wisp_sprite_network_receive_bytes_total{sprite="a"} 2048
# HELP wisp_sprite_memory_bytes Resident memory at the last sample (0 unless running).
# TYPE wisp_sprite_memory_bytes gauge
wisp_sprite_memory_bytes{sprite="a"} 1.073741824e+09
# HELP wisp_sprites Sprites by state.
# TYPE wisp_sprites gauge
wisp_sprites{state="running"} 1
wisp_sprites{state="sleeping"} 2
`
	if err := testutil.GatherAndCompare(x.Registry, strings.NewReader(want),
		"wisp_sprite_cpu_seconds_total", "wisp_sprite_network_receive_bytes_total", "wisp_sprite_memory_bytes", "wisp_sprites"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(x.ops); n != 2 {
		t.Errorf("%d operation series, want 2 (wake ok, create error)", n)
	}
	if n := testutil.CollectAndCount(x.requests); n != 1 {
		t.Errorf("%d request series, want 1", n)
	}
}
