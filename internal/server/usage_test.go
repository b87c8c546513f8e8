package server

import (
	"errors"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                     now.Add(-24 * time.Hour),
		"all":                  {},
		"90m":                  now.Add(-90 * time.Minute),
		"7d":                   now.AddDate(0, 0, -7),
		"2026-11-01T00:00:00Z": time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
	} {
		if got, err := parseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("since %q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"yesterday", "-1h", "0d", "7dd", "d", "1.5d"} {
		if _, err := parseSince(bad, now); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("since %q: %v, want invalid", bad, err)
		}
	}
}
