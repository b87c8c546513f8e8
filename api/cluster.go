package api

import "time"

// Host is one wispd of a cluster (GET /v1/hosts).
type Host struct {
	ID       string    `json:"id"`
	API      string    `json:"api,omitempty"` // base URL of its API over TCP
	CPUClass string    `json:"cpu_class,omitempty"`
	QEMU     string    `json:"qemu,omitempty"`
	Runsc    string    `json:"runsc,omitempty"`
	Accel    string    `json:"accel,omitempty"`
	Version  string    `json:"version,omitempty"`
	CPUs     int       `json:"cpus,omitempty"`
	Memory   int       `json:"memory_mib,omitempty"`
	Draining bool      `json:"draining,omitempty"`
	Started  time.Time `json:"started,omitzero"`
	// Sprites is how many sprites it has now; Self marks the host that
	// answered.
	Sprites int  `json:"sprites"`
	Self    bool `json:"self,omitempty"`
}

// MoveRequest is the body of POST /v1/sprites/{name}/move.
type MoveRequest struct {
	To string `json:"to"` // a host id
}

// DrainResult is the answer of POST /v1/hosts/{id}/drain.
type DrainResult struct {
	Host  string   `json:"host"`
	Moved []string `json:"moved"`
}
