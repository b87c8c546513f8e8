package api

import "time"

// Tokens open the API over TCP (wispd --listen): every request there
// carries `Authorization: Bearer TOKEN`. They are managed only over the
// unix socket: POST /v1/tokens (TokenCreateRequest, answers Token with
// its secret, the only time it is shown), GET /v1/tokens ([]Token without
// secrets), DELETE /v1/tokens/{name} (204; the token opens nothing from
// the next request on).
//
// A token scoped to sprites sees only those in GET /v1/sprites, gets 404
// for any other sprite, and 403 for what is not one sprite's: creating
// sprites, forking, images, the host report.

// Token kinds.
const (
	TokenWisp = "wisp" // `wisp_` + 64 hex digits; Authorization: Bearer
	TokenE2B  = "e2b"  // `e2b_` + 40 hex digits; the E2B API's X-API-Key
)

// TokenCreateRequest is the body of POST /v1/tokens.
type TokenCreateRequest struct {
	Name    string   `json:"name"`
	Sprites []string `json:"sprites,omitempty"` // scope; empty: every sprite
	E2B     bool     `json:"e2b,omitempty"`     // an E2B API key rather than a wisp token
}

// Token describes a token. Token (the secret) is set only in the answer
// to its creation.
type Token struct {
	Name    string    `json:"name"`
	Token   string    `json:"token,omitempty"`
	Sprites []string  `json:"sprites,omitempty"`
	Created time.Time `json:"created"`
	Kind    string    `json:"kind"`
}
