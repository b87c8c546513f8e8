package server

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

// status maps an error's kind to an HTTP status and a stable code. This is
// the one place where error kinds become status codes.
func status(err error) (int, string) {
	var ge *agent.GuestError
	if errors.As(err, &ge) {
		switch ge.Kind {
		case proto.KindNotFound:
			return http.StatusNotFound, api.CodeNotFound
		case proto.KindInvalid:
			return http.StatusBadRequest, api.CodeInvalid
		case proto.KindExists:
			return http.StatusConflict, api.CodeExists
		case proto.KindPerm:
			return http.StatusForbidden, api.CodePermission
		case proto.KindLimit:
			return http.StatusServiceUnavailable, api.CodeUnavailable
		}
		return http.StatusBadGateway, api.CodeGuestError
	}
	switch errdefs.Kind(err) {
	case errdefs.ErrNotFound:
		return http.StatusNotFound, api.CodeNotFound
	case errdefs.ErrExists:
		return http.StatusConflict, api.CodeExists
	case errdefs.ErrInvalid:
		return http.StatusBadRequest, api.CodeInvalid
	case errdefs.ErrState:
		return http.StatusConflict, api.CodeWrongState
	case errdefs.ErrUnavailable:
		return http.StatusServiceUnavailable, api.CodeUnavailable
	case errdefs.ErrNoSpace:
		return http.StatusInsufficientStorage, api.CodeNoSpace
	case errdefs.ErrConflict:
		return http.StatusConflict, api.CodeConflict
	}
	if errors.Is(err, agent.ErrAgent) {
		return http.StatusBadGateway, api.CodeAgentError
	}
	return http.StatusInternalServerError, api.CodeInternal
}

func writeError(w http.ResponseWriter, err error) {
	code, _ := status(err)
	writeJSON(w, code, api.ErrorBody{Error: apiError(err)})
}

// apiError is err as the API sends it.
func apiError(err error) api.Error {
	_, name := status(err)
	return api.Error{Code: name, Message: err.Error(), Hint: errdefs.Hint(err)}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
