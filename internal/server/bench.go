package server

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/network"
)

// maxBenchSamples bounds one net-setup measurement.
const maxBenchSamples = 200

// benchMu lets one measurement run at a time (they share the table).
var benchMu sync.Mutex

// benchNetSetup measures what networking adds to a start in the daemon's
// process (network.MeasureSetup): the CLI, which may run on another
// machine, does not link the network package.
func (s *Server) benchNetSetup(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("samples"))
	if err != nil || n < 1 || n > maxBenchSamples {
		writeError(w, fmt.Errorf("samples %q: want 1-%d: %w", r.URL.Query().Get("samples"), maxBenchSamples, errdefs.ErrInvalid))
		return
	}
	if !benchMu.TryLock() {
		writeError(w, fmt.Errorf("a network setup measurement is running: %w", errdefs.ErrUnavailable))
		return
	}
	defer benchMu.Unlock()
	ds, err := network.MeasureSetup(n)
	if err != nil {
		writeError(w, fmt.Errorf("measure network setup: %w", err))
		return
	}
	out := api.BenchSamples{Ms: make([]float64, len(ds))}
	for i, d := range ds {
		out.Ms[i] = float64(d.Microseconds()) / 1000
	}
	writeJSON(w, 200, out)
}
