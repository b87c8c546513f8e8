// Package api holds wispd's wire types: what the HTTP API (over the unix
// socket and TCP) sends and receives. The server and the public client
// (package client) both use it; it imports nothing of wisp's internals, so
// programs on any OS can drive a wispd. openapi.yaml beside it describes
// every route.
package api

// Error is the body of every error response: {"error": {...}}.
type Error struct {
	Code    string `json:"code"`    // stable, machine-readable (see the Code constants)
	Message string `json:"message"` // for a person
	Hint    string `json:"hint,omitempty"`
}

// ErrorBody wraps Error as the API sends it.
type ErrorBody struct {
	Error Error `json:"error"`
}

// Error codes. The client maps them back to errdefs kinds.
const (
	CodeNotFound     = "not_found"
	CodeExists       = "exists"
	CodeInvalid      = "invalid"
	CodeWrongState   = "wrong_state"
	CodeUnavailable  = "unavailable"
	CodeNoSpace      = "no_space"
	CodePermission   = "permission_denied"
	CodeUnauthorized = "unauthorized"
	CodeGuestError   = "guest_error"
	CodeAgentError   = "agent_error"
	CodeInternal     = "internal"
	CodeConflict     = "conflict" // another host holds the sprite, or it changed meanwhile
)
