package api

import "time"

// Usage is what one sprite (or all of them) used over a span: the numbers
// `wisp usage` shows and GET /v1/usage returns.
type Usage struct {
	Sprite           string    `json:"sprite,omitempty"`
	ID               string    `json:"id,omitempty"`
	Destroyed        bool      `json:"destroyed,omitempty"`
	From             time.Time `json:"from,omitzero"` // start of the span (or of the bucket)
	CPUSeconds       float64   `json:"cpu_seconds"`
	MemoryGiBSeconds float64   `json:"memory_gib_seconds"`
	StorageGiBHours  float64   `json:"storage_gib_hours"`
	NetRxBytes       uint64    `json:"net_rx_bytes"`
	NetTxBytes       uint64    `json:"net_tx_bytes"`
	Cost             float64   `json:"cost"`
}

// UsageReport answers GET /v1/usage?sprite=&since=&by=hour|day.
type UsageReport struct {
	Since    time.Time `json:"since"`
	Currency string    `json:"currency"`
	Sprites  []Usage   `json:"sprites"`
	Total    Usage     `json:"total"`
	// Series is per bucket (by=hour or day), all sprites asked for summed;
	// empty without by.
	Series []Usage `json:"series,omitempty"`
}

// Live is one running sprite's use right now (GET /v1/top).
type Live struct {
	Sprite       string  `json:"sprite"`
	State        string  `json:"state"`
	CPUPercent   float64 `json:"cpu_percent"` // of one core
	MemoryBytes  int64   `json:"memory_bytes"`
	NetRxRate    float64 `json:"net_rx_bytes_per_second"`
	NetTxRate    float64 `json:"net_tx_bytes_per_second"`
	StorageBytes int64   `json:"storage_bytes"`
	Capped       string  `json:"capped,omitempty"`
}

// Cap limits what a sprite may use per period; a sprite that reaches it is
// put to sleep and refuses to wake until the cap is raised or the period
// rolls over. Zero fields are no limit.
type Cap struct {
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	Cost       float64 `json:"cost,omitempty"`
	Per        string  `json:"per,omitempty"` // "day" (default) or "month"
}

// CapStatus is a sprite's cap and, when it reached it in the current
// period, why it is held asleep.
type CapStatus struct {
	Cap
	Capped string `json:"capped,omitempty"`
}
