package meter

import "github.com/wisp-sh/wisp/api"

// Prices turn use into money. The defaults are modelled on public
// per-second cloud sandbox pricing (Sprites' pay-as-you-go list, November
// 2026): an example to compare with, not a quote.
type Prices struct {
	Currency        string  `json:"currency"`
	CPUSecond       float64 `json:"cpu_second"`        // per CPU-second
	MemoryGiBSecond float64 `json:"memory_gib_second"` // per GiB-second of resident memory
	StorageGiBHour  float64 `json:"storage_gib_hour"`  // per GiB-hour of the sprite's own blocks
	NetworkOutGiB   float64 `json:"network_out_gib"`   // per GiB sent
	NetworkInGiB    float64 `json:"network_in_gib"`    // per GiB received
}

// DefaultPrices: $0.00000764 per vCPU-second, $0.00001215 per GB-second,
// $0.50 per GB-month of storage (730 hours), network free.
var DefaultPrices = Prices{
	Currency:        "USD",
	CPUSecond:       0.00000764,
	MemoryGiBSecond: 0.00001215,
	StorageGiBHour:  0.50 / 730,
}

// Cost prices u.
func (p Prices) Cost(u api.Usage) float64 {
	const gib = 1 << 30
	return u.CPUSeconds*p.CPUSecond +
		u.MemoryGiBSeconds*p.MemoryGiBSecond +
		u.StorageGiBHours*p.StorageGiBHour +
		float64(u.NetTxBytes)/gib*p.NetworkOutGiB +
		float64(u.NetRxBytes)/gib*p.NetworkInGiB
}
