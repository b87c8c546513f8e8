package client

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Error kinds: errors.Is(err, client.ErrNotFound) holds for an *Error of
// that kind. They are the daemon's own (package errdefs).
var (
	ErrNotFound    = errdefs.ErrNotFound
	ErrExists      = errdefs.ErrExists
	ErrInvalid     = errdefs.ErrInvalid
	ErrState       = errdefs.ErrState
	ErrUnavailable = errdefs.ErrUnavailable
	ErrNoSpace     = errdefs.ErrNoSpace
	ErrConflict    = errdefs.ErrConflict
)

// kinds maps the API's error codes to kinds.
var kinds = map[string]error{
	api.CodeNotFound:    ErrNotFound,
	api.CodeExists:      ErrExists,
	api.CodeInvalid:     ErrInvalid,
	api.CodeWrongState:  ErrState,
	api.CodeUnavailable: ErrUnavailable,
	api.CodeNoSpace:     ErrNoSpace,
	api.CodeConflict:    ErrConflict,
}

// Error is an error the API returned.
type Error struct {
	Status  int    // the HTTP status
	Code    string // an api.Code* constant, or "http" for a body that was not an API error
	Message string
	Hint    string // what to do about it, if the daemon knows
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the error's kind (ErrNotFound...), or nil.
func (e *Error) Unwrap() error { return kinds[e.Code] }

func apiErr(status int, e api.Error) *Error {
	return &Error{Status: status, Code: e.Code, Message: e.Message, Hint: e.Hint}
}

func decodeError(resp *http.Response) error {
	var body api.ErrorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &body) != nil || body.Error.Message == "" {
		return &Error{Status: resp.StatusCode, Code: "http", Message: fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(b)))}
	}
	return apiErr(resp.StatusCode, body.Error)
}
