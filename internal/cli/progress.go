package cli

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/wisp-sh/wisp/api"
)

// buildProgress renders an image build's reports: a line per phase, and on
// a terminal a bar (or, where the total is unknown, a count) within it.
// schollz/progressbar draws the bar: it handles terminal width, rates and
// throttled redraws, which a hand-rolled \r line would get wrong.
type buildProgress struct {
	w     io.Writer
	tty   bool
	t0    time.Time
	step  int
	bar   *progressbar.ProgressBar
	total int
	log   string
}

func newBuildProgress(w io.Writer) *buildProgress {
	f, ok := w.(*os.File)
	return &buildProgress{w: w, tty: ok && term.IsTerminal(int(f.Fd())), t0: time.Now()}
}

func (b *buildProgress) report(p api.Progress) {
	b.log = p.Log
	if p.Step != b.step {
		b.finish()
		b.step = p.Step
		fmt.Fprintf(b.w, "[%5.1fs] [%d/%d] %s\n", time.Since(b.t0).Seconds(), p.Step, p.Steps, p.Phase)
	}
	if !b.tty || (p.Done == 0 && p.Total == 0) {
		return
	}
	if b.bar == nil || p.Total != b.total {
		b.finish()
		b.total = p.Total
		max := p.Total
		if max == 0 {
			max = -1 // a spinner with a count
		}
		b.bar = progressbar.NewOptions(max, progressbar.OptionSetWriter(b.w), progressbar.OptionSetWidth(30),
			progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(false), progressbar.OptionClearOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond))
	}
	b.bar.Set(p.Done)
}

func (b *buildProgress) finish() {
	if b.bar != nil {
		b.bar.Finish()
		b.bar = nil
	}
}
