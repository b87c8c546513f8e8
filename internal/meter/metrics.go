package meter

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is the daemon's Prometheus registry: every sprite's use as the
// meter last saw it (read at scrape time, so a scrape costs no sampling),
// and the daemon's health: API requests by route and status, and the
// latency of creates and wakes.
type Metrics struct {
	Registry *prometheus.Registry
	requests *prometheus.CounterVec
	ops      *prometheus.HistogramVec
}

// NewMetrics registers the meter's figures; states, when set, counts
// sprites by state.
func NewMetrics(m *Meter, states func() map[string]int) *Metrics {
	reg := prometheus.NewRegistry()
	x := &Metrics{
		Registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wisp_api_requests_total", Help: "API requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		ops: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wisp_operation_duration_seconds", Help: "How long sprite creates and wakes took, by result.",
			Buckets: []float64{.05, .1, .2, .3, .5, .75, 1, 1.5, 2, 3, 5, 10, 30},
		}, []string{"op", "result"}),
	}
	reg.MustRegister(x.requests, x.ops, &collector{m: m, states: states},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return x
}

// Observe records one operation (sprite.Options.Observe).
func (x *Metrics) Observe(op string, took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	x.ops.WithLabelValues(op, result).Observe(took.Seconds())
}

// Request counts one API request.
func (x *Metrics) Request(route, method, code string) {
	x.requests.WithLabelValues(route, method, code).Inc()
}

var (
	sprite      = []string{"sprite"}
	descCPU     = prometheus.NewDesc("wisp_sprite_cpu_seconds_total", "CPU time a sprite's VMM or sandbox used.", sprite, nil)
	descMemS    = prometheus.NewDesc("wisp_sprite_memory_gib_seconds_total", "Resident memory over time (GiB-seconds).", sprite, nil)
	descStoH    = prometheus.NewDesc("wisp_sprite_storage_gib_hours_total", "The sprite's own blocks in the pool over time (GiB-hours).", sprite, nil)
	descRx      = prometheus.NewDesc("wisp_sprite_network_receive_bytes_total", "Bytes the sprite received.", sprite, nil)
	descTx      = prometheus.NewDesc("wisp_sprite_network_transmit_bytes_total", "Bytes the sprite sent.", sprite, nil)
	descCost    = prometheus.NewDesc("wisp_sprite_cost_total", "What the sprite's use cost at the daemon's prices.", sprite, nil)
	descMem     = prometheus.NewDesc("wisp_sprite_memory_bytes", "Resident memory at the last sample (0 unless running).", sprite, nil)
	descStorage = prometheus.NewDesc("wisp_sprite_storage_bytes", "The sprite's own blocks in the pool at the last measurement.", sprite, nil)
	descCPUPct  = prometheus.NewDesc("wisp_sprite_cpu_percent", "CPU use over the last sampling interval, in percent of one core.", sprite, nil)
	descStates  = prometheus.NewDesc("wisp_sprites", "Sprites by state.", []string{"state"}, nil)
)

type collector struct {
	m      *Meter
	states func() map[string]int
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCPU, descMemS, descStoH, descRx, descTx, descCost, descMem, descStorage, descCPUPct, descStates} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, u := range c.m.Totals() {
		if u.Destroyed {
			continue
		}
		n := u.Sprite
		ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, u.CPUSeconds, n)
		ch <- prometheus.MustNewConstMetric(descMemS, prometheus.CounterValue, u.MemoryGiBSeconds, n)
		ch <- prometheus.MustNewConstMetric(descStoH, prometheus.CounterValue, u.StorageGiBHours, n)
		ch <- prometheus.MustNewConstMetric(descRx, prometheus.CounterValue, float64(u.NetRxBytes), n)
		ch <- prometheus.MustNewConstMetric(descTx, prometheus.CounterValue, float64(u.NetTxBytes), n)
		ch <- prometheus.MustNewConstMetric(descCost, prometheus.CounterValue, u.Cost, n)
	}
	for _, l := range c.m.Live() {
		ch <- prometheus.MustNewConstMetric(descMem, prometheus.GaugeValue, float64(l.MemoryBytes), l.Sprite)
		ch <- prometheus.MustNewConstMetric(descStorage, prometheus.GaugeValue, float64(l.StorageBytes), l.Sprite)
		ch <- prometheus.MustNewConstMetric(descCPUPct, prometheus.GaugeValue, l.CPUPercent, l.Sprite)
	}
	if c.states != nil {
		for st, n := range c.states() {
			ch <- prometheus.MustNewConstMetric(descStates, prometheus.GaugeValue, float64(n), st)
		}
	}
}
