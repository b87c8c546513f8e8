package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("sprite x: %w", errdefs.ErrNotFound), 404, "not_found"},
		{fmt.Errorf("x: %w", errdefs.ErrExists), 409, "exists"},
		{errdefs.WithHint(fmt.Errorf("x: %w", errdefs.ErrInvalid), "h"), 400, "invalid"},
		{fmt.Errorf("x: %w", errdefs.ErrState), 409, "wrong_state"},
		{fmt.Errorf("x: %w", errdefs.ErrUnavailable), 503, "unavailable"},
		{fmt.Errorf("x: %w", errdefs.ErrNoSpace), 507, "no_space"},
		{&agent.GuestError{Kind: proto.KindNotFound, Msg: "no"}, 404, "not_found"},
		{&agent.GuestError{Kind: proto.KindPerm, Msg: "no"}, 403, "permission_denied"},
		{fmt.Errorf("%w: broken", agent.ErrAgent), 502, "agent_error"},
		{errors.New("boom"), 500, "internal"},
	} {
		st, code := status(tc.err)
		if st != tc.status || code != tc.code {
			t.Errorf("status(%v) = %d %s, want %d %s", tc.err, st, code, tc.status, tc.code)
		}
	}
}

func TestWriteErrorCarriesHint(t *testing.T) {
	rec := httptest.NewRecorder()
	writeError(rec, errdefs.WithHint(fmt.Errorf("image %q: %w", "dev", errdefs.ErrUnavailable), "build it"))
	var body struct{ Error api.Error }
	json.Unmarshal(rec.Body.Bytes(), &body)
	if rec.Code != http.StatusServiceUnavailable || body.Error.Code != "unavailable" || body.Error.Hint != "build it" || body.Error.Message == "" {
		t.Errorf("got %d %+v", rec.Code, body)
	}
}
