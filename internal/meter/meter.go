// Package meter measures what each sprite uses (CPU time, resident memory,
// its own blocks in the pool, network bytes), keeps the totals and an hourly
// series durably, prices them, and enforces caps.
//
// The meter samples; it never asks a guest. Counters come from what the
// host sees of a sprite (its VMM's or sandbox's cgroup or process, the
// host end of its network link, the extents of its files), through a
// Source the daemon provides. A sleeping or stopped sprite accrues only
// storage, because it has no process to count.
package meter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Reading is one sprite as the host sees it at one moment.
type Reading struct {
	ID, Name string
	State    string
	// Running: it has a process whose CPU and memory count.
	Running bool
	// CPUEpoch names what CPU counts from (the instance: its pid and
	// start time); a new epoch means the counter began again at zero.
	CPUEpoch string
	CPU      time.Duration
	Memory   int64 // resident bytes now
	// NetEpoch names the link NetRx and NetTx count on (seen from the
	// sprite: Rx is what it received).
	NetEpoch     string
	NetRx, NetTx uint64
	// Storage is the sprite's own bytes in the pool; -1: not measured
	// this time (the last measurement stands).
	Storage int64
}

// Source reads every sprite the daemon keeps. Readings must be cheap
// unless storage is true (a walk of extents): the meter asks for storage
// only every Options.StorageEvery.
type Source interface {
	Readings(ctx context.Context, storage bool) []Reading
}

// Enforcer puts a sprite that reached its cap to sleep.
type Enforcer interface {
	SleepCapped(ctx context.Context, name, reason string) error
}

// Options configure a Meter.
type Options struct {
	Path         string        // the usage database
	Interval     time.Duration // between samples; default 10 s
	StorageEvery time.Duration // between storage walks; default 3 intervals
	Prices       Prices
	Log          *slog.Logger
	Now          func() time.Time // for tests; default time.Now
}

// Meter accrues readings into durable totals.
type Meter struct {
	opt         Options
	db          *store
	mu          sync.Mutex
	recs        map[string]*record // by sprite ID
	live        map[string]api.Live
	lastStorage time.Time
}

// counters are accrued use.
type counters struct {
	CPUSeconds       float64 `json:"cpu_s"`
	MemoryGiBSeconds float64 `json:"mem_gib_s"`
	StorageGiBHours  float64 `json:"sto_gib_h"`
	NetRx            uint64  `json:"rx"`
	NetTx            uint64  `json:"tx"`
}

func (c *counters) add(d counters) {
	c.CPUSeconds += d.CPUSeconds
	c.MemoryGiBSeconds += d.MemoryGiBSeconds
	c.StorageGiBHours += d.StorageGiBHours
	c.NetRx += d.NetRx
	c.NetTx += d.NetTx
}

func (c counters) usage() api.Usage {
	return api.Usage{CPUSeconds: c.CPUSeconds, MemoryGiBSeconds: c.MemoryGiBSeconds,
		StorageGiBHours: c.StorageGiBHours, NetRxBytes: c.NetRx, NetTxBytes: c.NetTx}
}

// record is what the meter keeps of one sprite.
type record struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Destroyed time.Time `json:"destroyed,omitzero"`
	Total     counters  `json:"total"`
	// The last reading, so that the next one accrues only its difference
	// (and a restarted daemon goes on where it stopped).
	At       time.Time     `json:"at,omitzero"`
	CPUEpoch string        `json:"cpu_epoch,omitempty"`
	CPU      time.Duration `json:"cpu,omitempty"`
	NetEpoch string        `json:"net_epoch,omitempty"`
	NetRx    uint64        `json:"net_rx,omitempty"`
	NetTx    uint64        `json:"net_tx,omitempty"`
	Storage  int64         `json:"storage,omitempty"`
	// The cap, the current period's use, and whether the sprite was put
	// to sleep for reaching it in that period.
	Cap       api.Cap   `json:"cap,omitzero"`
	Period    time.Time `json:"period,omitzero"`
	PeriodUse counters  `json:"period_use"`
	CappedIn  time.Time `json:"capped_in,omitzero"`
}

// Open opens (creating) the usage database and loads it.
func Open(opt Options) (*Meter, error) {
	if opt.Interval <= 0 {
		opt.Interval = 10 * time.Second
	}
	if opt.StorageEvery <= 0 {
		opt.StorageEvery = 3 * opt.Interval
	}
	if opt.Prices == (Prices{}) {
		opt.Prices = DefaultPrices
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	db, err := openStore(opt.Path)
	if err != nil {
		return nil, err
	}
	recs, err := db.records()
	if err != nil {
		db.close()
		return nil, err
	}
	return &Meter{opt: opt, db: db, recs: recs, live: map[string]api.Live{}}, nil
}

// Close closes the database; call it after Run returned.
func (m *Meter) Close() error { return m.db.close() }

// Prices returns the price table in force.
func (m *Meter) Prices() Prices { return m.opt.Prices }

// Run samples every Interval until ctx ends.
func (m *Meter) Run(ctx context.Context, src Source, enf Enforcer) {
	t := time.NewTicker(m.opt.Interval)
	defer t.Stop()
	for {
		if err := m.Tick(ctx, src, enf); err != nil && ctx.Err() == nil {
			m.opt.Log.Warn("usage sample", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick takes one sample of every sprite, accrues it, persists the result
// in one transaction, and puts sprites over their caps to sleep.
func (m *Meter) Tick(ctx context.Context, src Source, enf Enforcer) error {
	now := m.opt.Now()
	walk := now.Sub(m.lastStorage) >= m.opt.StorageEvery
	readings := src.Readings(ctx, walk)
	if walk {
		m.lastStorage = now
	}

	m.mu.Lock()
	seen := make(map[string]bool, len(readings))
	var changed []*record
	hours := map[string]counters{}
	var over []capHit
	live := make(map[string]api.Live, len(readings))
	for _, r := range readings {
		seen[r.ID] = true
		rec := m.recs[r.ID]
		if rec == nil {
			rec = &record{ID: r.ID, Name: r.Name}
			m.recs[r.ID] = rec
		}
		rec.Name = r.Name
		prev := *rec
		d := m.accrue(rec, r, now)
		rec.Total.add(d)
		m.rollPeriod(rec, now)
		rec.PeriodUse.add(d)
		if d != (counters{}) {
			h := hourKey(rec.ID, now)
			c := hours[h]
			c.add(d)
			hours[h] = c
		}
		changed = append(changed, rec)
		live[r.Name] = liveOf(r, rec, prev, d, now)
		if reason := m.overCap(rec); reason != "" && r.Running && rec.CappedIn.IsZero() {
			rec.CappedIn = rec.Period
			over = append(over, capHit{name: r.Name, reason: reason})
		}
	}
	for id, rec := range m.recs {
		if !seen[id] && rec.Destroyed.IsZero() {
			rec.Destroyed = now
			changed = append(changed, rec)
		}
	}
	m.live = live
	err := m.db.save(changed, hours)
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("save usage: %w", err)
	}
	var errs []error
	for _, h := range over {
		m.opt.Log.Info("sprite reached its cap", "sprite", h.name, "reason", h.reason)
		if enf != nil {
			if err := enf.SleepCapped(ctx, h.name, h.reason); err != nil {
				errs = append(errs, fmt.Errorf("sleep %s at its cap: %w", h.name, err))
			}
		}
	}
	return errors.Join(errs...)
}

type capHit struct{ name, reason string }

// accrue returns what r adds to rec since rec's last reading, and makes r
// the last reading.
func (m *Meter) accrue(rec *record, r Reading, now time.Time) counters {
	var d counters
	dt := 0.0
	if !rec.At.IsZero() && now.After(rec.At) {
		dt = now.Sub(rec.At).Seconds()
	}
	if r.Running {
		cpu := r.CPU
		if r.CPUEpoch == rec.CPUEpoch && cpu >= rec.CPU {
			cpu -= rec.CPU
		}
		d.CPUSeconds = cpu.Seconds()
		// Resident memory is a level: it accrues for the time since the
		// last sample, at most a few intervals (a daemon that was down
		// did not see what the sprite held meanwhile).
		gap := min(dt, 3*m.opt.Interval.Seconds())
		d.MemoryGiBSeconds = float64(r.Memory) / (1 << 30) * gap
		rec.CPUEpoch, rec.CPU = r.CPUEpoch, r.CPU
	}
	if r.NetEpoch != "" {
		rx, tx := r.NetRx, r.NetTx
		if r.NetEpoch == rec.NetEpoch && rx >= rec.NetRx && tx >= rec.NetTx {
			rx, tx = rx-rec.NetRx, tx-rec.NetTx
		}
		d.NetRx, d.NetTx = rx, tx
		rec.NetEpoch, rec.NetRx, rec.NetTx = r.NetEpoch, r.NetRx, r.NetTx
	}
	// Storage is held whether or not the daemon watched, so the whole
	// gap counts, at the last size measured.
	d.StorageGiBHours = float64(rec.Storage) / (1 << 30) * dt / 3600
	if r.Storage >= 0 {
		rec.Storage = r.Storage
	}
	rec.At = now
	return d
}

// periodStart is where the period of c that holds t begins (UTC).
func periodStart(c api.Cap, t time.Time) time.Time {
	t = t.UTC()
	if c.Per == "month" {
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

func (m *Meter) rollPeriod(rec *record, now time.Time) {
	if p := periodStart(rec.Cap, now); !p.Equal(rec.Period) {
		rec.Period, rec.PeriodUse, rec.CappedIn = p, counters{}, time.Time{}
	}
}

// overCap says why rec's use in its period reached its cap ("" if not).
func (m *Meter) overCap(rec *record) string {
	c := rec.Cap
	per := c.Per
	if per == "" {
		per = "day"
	}
	u := rec.PeriodUse.usage()
	if c.CPUSeconds > 0 && u.CPUSeconds >= c.CPUSeconds {
		return fmt.Sprintf("cap reached: %.1f CPU-seconds used this %s (cap %.1f)", u.CPUSeconds, per, c.CPUSeconds)
	}
	if c.Cost > 0 {
		if cost := m.opt.Prices.Cost(u); cost >= c.Cost {
			return fmt.Sprintf("cap reached: %.4f %s spent this %s (cap %.4f)", cost, m.opt.Prices.Currency, per, c.Cost)
		}
	}
	return ""
}

// Allow says whether the sprite id may run: an error of kind ErrState
// naming the cap when it reached its cap in the current period and the
// cap was not raised since.
func (m *Meter) Allow(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec := m.recs[id]
	if rec == nil {
		return nil
	}
	m.rollPeriod(rec, m.opt.Now())
	reason := m.overCap(rec)
	if reason == "" {
		rec.CappedIn = time.Time{}
		return nil
	}
	next := rec.Period.AddDate(0, 0, 1)
	if rec.Cap.Per == "month" {
		next = rec.Period.AddDate(0, 1, 0)
	}
	return errdefs.WithHint(fmt.Errorf("sprite %q: %s: %w", rec.Name, reason, errdefs.ErrState),
		fmt.Sprintf("raise it with `wisp set %s cap.cpu_seconds=N` or `cap.cost=N` (or cap.none), or wait until %s", rec.Name, next.Format(time.RFC3339)))
}

// Capped returns why the sprite id is held at its cap ("" if it is not).
func (m *Meter) Capped(id string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec := m.recs[id]
	if rec == nil || rec.CappedIn.IsZero() || !rec.CappedIn.Equal(periodStart(rec.Cap, m.opt.Now())) {
		return ""
	}
	return m.overCap(rec)
}

// SetCap sets (replaces) the cap of sprite id; the zero Cap removes it.
func (m *Meter) SetCap(id, name string, c api.Cap) error {
	if c.CPUSeconds < 0 || c.Cost < 0 {
		return fmt.Errorf("cap: negative limit: %w", errdefs.ErrInvalid)
	}
	switch c.Per {
	case "", "day", "month":
	default:
		return errdefs.WithHint(fmt.Errorf("cap: per=%q: %w", c.Per, errdefs.ErrInvalid), "per=day or per=month")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	rec := m.recs[id]
	if rec == nil {
		rec = &record{ID: id, Name: name}
		m.recs[id] = rec
	}
	old := rec.Cap
	rec.Cap = c
	if old.Per != c.Per {
		// A new period kind starts counting now.
		rec.Period, rec.PeriodUse = periodStart(c, m.opt.Now()), counters{}
	}
	if m.overCap(rec) == "" {
		rec.CappedIn = time.Time{}
	}
	return m.db.save([]*record{rec}, nil)
}

// Cap returns the cap of sprite id.
func (m *Meter) Cap(id string) api.Cap {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rec := m.recs[id]; rec != nil {
		return rec.Cap
	}
	return api.Cap{}
}

// Know makes sure the meter has a record of sprite id (named name), so
// that a sprite made since the last sample reads as zero, not unknown.
func (m *Meter) Know(id, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.recs[id] == nil {
		m.recs[id] = &record{ID: id, Name: name}
	}
}

// Query selects usage: of the sprites named (all when empty), from Since,
// and a series by "hour" or "day" ("" none).
type Query struct {
	Names []string
	Since time.Time
	By    string
}

// Usage answers q from the hourly series.
func (m *Meter) Usage(q Query) (api.UsageReport, error) {
	if q.By != "" && q.By != "hour" && q.By != "day" {
		return api.UsageReport{}, errdefs.WithHint(fmt.Errorf("usage: by=%q: %w", q.By, errdefs.ErrInvalid), "by=hour or by=day")
	}
	m.mu.Lock()
	want := map[string]bool{}
	for _, n := range q.Names {
		want[n] = true
	}
	var ids []*record
	for _, rec := range m.recs {
		if len(want) == 0 || want[rec.Name] {
			r := *rec
			ids = append(ids, &r)
		}
	}
	m.mu.Unlock()
	for n := range want {
		found := false
		for _, r := range ids {
			found = found || r.Name == n
		}
		if !found {
			return api.UsageReport{}, fmt.Errorf("no usage of sprite %q: %w", n, errdefs.ErrNotFound)
		}
	}
	sort.Slice(ids, func(i, j int) bool {
		if ids[i].Name != ids[j].Name {
			return ids[i].Name < ids[j].Name
		}
		return ids[i].Destroyed.IsZero() && !ids[j].Destroyed.IsZero()
	})
	rep := api.UsageReport{Since: q.Since, Currency: m.opt.Prices.Currency}
	var total counters
	series := map[time.Time]*counters{}
	for _, rec := range ids {
		var sum counters
		err := m.db.hours(rec.ID, q.Since, func(h time.Time, c counters) {
			sum.add(c)
			if q.By == "" {
				return
			}
			b := h
			if q.By == "day" {
				b = time.Date(h.Year(), h.Month(), h.Day(), 0, 0, 0, 0, time.UTC)
			}
			if series[b] == nil {
				series[b] = &counters{}
			}
			series[b].add(c)
		})
		if err != nil {
			return api.UsageReport{}, err
		}
		u := sum.usage()
		u.Sprite, u.ID, u.Destroyed = rec.Name, rec.ID, !rec.Destroyed.IsZero()
		u.Cost = m.opt.Prices.Cost(u)
		rep.Sprites = append(rep.Sprites, u)
		total.add(sum)
	}
	rep.Total = total.usage()
	rep.Total.Cost = m.opt.Prices.Cost(rep.Total)
	for b, c := range series {
		u := c.usage()
		u.From = b
		u.Cost = m.opt.Prices.Cost(u)
		rep.Series = append(rep.Series, u)
	}
	sort.Slice(rep.Series, func(i, j int) bool { return rep.Series[i].From.Before(rep.Series[j].From) })
	return rep, nil
}

// Live returns the last sample's rates of every sprite, by name.
func (m *Meter) Live() []api.Live {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]api.Live, 0, len(m.live))
	for _, l := range m.live {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Sprite < out[j].Sprite })
	return out
}

// Totals returns every sprite's total use (destroyed ones included), for
// the metrics endpoint.
func (m *Meter) Totals() []api.Usage {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]api.Usage, 0, len(m.recs))
	for _, rec := range m.recs {
		u := rec.Total.usage()
		u.Sprite, u.ID, u.Destroyed = rec.Name, rec.ID, !rec.Destroyed.IsZero()
		u.Cost = m.opt.Prices.Cost(u)
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Sprite < out[j].Sprite })
	return out
}

func liveOf(r Reading, rec *record, prev record, d counters, now time.Time) api.Live {
	l := api.Live{Sprite: r.Name, State: r.State, StorageBytes: rec.Storage}
	if r.Running {
		l.MemoryBytes = r.Memory
	}
	if !prev.At.IsZero() {
		if dt := now.Sub(prev.At).Seconds(); dt > 0 {
			l.CPUPercent = d.CPUSeconds / dt * 100
			l.NetRxRate = float64(d.NetRx) / dt
			l.NetTxRate = float64(d.NetTx) / dt
		}
	}
	return l
}
