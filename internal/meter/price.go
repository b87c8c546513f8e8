package meter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

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

// LoadPrices reads a JSON price table from path (fields missing keep their
// default); "" gives the defaults.
func LoadPrices(path string) (Prices, error) {
	p := DefaultPrices
	if path == "" {
		return p, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return p, fmt.Errorf("prices: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, errdefs.WithHint(fmt.Errorf("prices %s: %w: %w", path, err, errdefs.ErrInvalid),
			`want {"currency":"USD","cpu_second":0.0000076,"memory_gib_second":0.000012,"storage_gib_hour":0.00068,"network_out_gib":0,"network_in_gib":0}`)
	}
	for _, v := range []float64{p.CPUSecond, p.MemoryGiBSecond, p.StorageGiBHour, p.NetworkOutGiB, p.NetworkInGiB} {
		if v < 0 {
			return p, fmt.Errorf("prices %s: negative price: %w", path, errdefs.ErrInvalid)
		}
	}
	return p, nil
}
