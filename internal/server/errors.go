package server

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

// APIError is the body of every error response.
type APIError struct {
	Code    string `json:"code"`    // stable, machine-readable
	Message string `json:"message"` // for a person
	Hint    string `json:"hint,omitempty"`
}

// status maps an error's kind to an HTTP status and a stable code. This is
// the one place where error kinds become status codes.
func status(err error) (int, string) {
	var ge *agent.GuestError
	if errors.As(err, &ge) {
		switch ge.Kind {
		case proto.KindNotFound:
			return http.StatusNotFound, "not_found"
		case proto.KindInvalid:
			return http.StatusBadRequest, "invalid"
		case proto.KindExists:
			return http.StatusConflict, "exists"
		case proto.KindPerm:
			return http.StatusForbidden, "permission_denied"
		}
		return http.StatusBadGateway, "guest_error"
	}
	switch errdefs.Kind(err) {
	case errdefs.ErrNotFound:
		return http.StatusNotFound, "not_found"
	case errdefs.ErrExists:
		return http.StatusConflict, "exists"
	case errdefs.ErrInvalid:
		return http.StatusBadRequest, "invalid"
	case errdefs.ErrState:
		return http.StatusConflict, "wrong_state"
	case errdefs.ErrUnavailable:
		return http.StatusServiceUnavailable, "unavailable"
	case errdefs.ErrNoSpace:
		return http.StatusInsufficientStorage, "no_space"
	}
	if errors.Is(err, agent.ErrAgent) {
		return http.StatusBadGateway, "agent_error"
	}
	return http.StatusInternalServerError, "internal"
}

func writeError(w http.ResponseWriter, err error) {
	code, name := status(err)
	writeJSON(w, code, map[string]APIError{"error": {Code: name, Message: err.Error(), Hint: errdefs.Hint(err)}})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
