package meter

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkTick100 is one sample of 100 running sprites: each one's
// process read from /proc (and its cgroup where it has one), the
// accrual, and the fsynced save; with storage, also a walk of each
// sprite's folder (a 16 MiB disk file). What metering costs a core is
// (tick + storage tick / 6) / interval:
//
//	go test -run - -bench Tick100 ./internal/meter
func BenchmarkTick100(b *testing.B) {
	for _, storage := range []bool{false, true} {
		b.Run(fmt.Sprintf("storage=%v", storage), func(b *testing.B) {
			dir := b.TempDir()
			var rs []Reading
			var pids []int
			for i := range 100 {
				cmd := exec.Command("sleep", "600")
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				defer cmd.Process.Kill()
				pids = append(pids, cmd.Process.Pid)
				sd := filepath.Join(dir, fmt.Sprint(i))
				os.Mkdir(sd, 0o755)
				f, _ := os.Create(filepath.Join(sd, "disk.img"))
				f.Write(make([]byte, 16<<20))
				f.Close()
				rs = append(rs, Reading{ID: fmt.Sprintf("id%03d", i), Name: fmt.Sprintf("s%03d", i), Running: true})
			}
			src := source(func(bool) []Reading {
				out := make([]Reading, len(rs))
				for i, r := range rs {
					r.CPU, r.Memory, r.CPUEpoch, _ = Process(pids[i], "wisp")
					r.Storage = -1
					if storage {
						r.Storage, _ = Storage([]string{filepath.Join(dir, fmt.Sprint(i))}, nil)
					}
					out[i] = r
				}
				return out
			})
			t := time.Now()
			m, err := Open(Options{Path: filepath.Join(dir, "usage.db"), Now: func() time.Time { t = t.Add(10 * time.Second); return t }})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			b.ResetTimer()
			c0 := cpuTime()
			n := 0
			for b.Loop() {
				if err := m.Tick(context.Background(), src, nil); err != nil {
					b.Fatal(err)
				}
				n++
			}
			// CPU, not wall time: the save's fsync waits on the disk.
			b.ReportMetric(float64(cpuTime()-c0)/float64(n), "cpu-ns/op")
		})
	}
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
