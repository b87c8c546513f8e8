package client_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/coder/websocket"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/client"
)

// TestHostAndToken: a client of a URL sends its bearer token with every
// request, the exec WebSocket's too, and an error body becomes an *Error
// of its kind.
func TestHostAndToken(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.Version{Version: "v-test"})
	})
	mux.HandleFunc("GET /v1/sprites/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(api.ErrorBody{Error: api.Error{Code: api.CodeNotFound, Message: `sprite "x": not found`, Hint: "wisp list"}})
	})
	mux.HandleFunc("GET /v1/sprites/{name}/exec", func(w http.ResponseWriter, r *http.Request) {
		req, err := api.ParseExecRequest(r.URL.Query())
		if err != nil || len(req.Cmd) != 2 || req.Cmd[1] != "hi" {
			http.Error(w, "bad exec query", 400)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		hello, _ := json.Marshal(api.SessionMessage{Type: "session", ID: "s1"})
		c.Write(r.Context(), websocket.MessageText, hello)
		c.Write(r.Context(), websocket.MessageBinary, append([]byte{api.StreamStdout}, "hi\n"...))
		c.Write(r.Context(), websocket.MessageBinary, []byte{api.StreamExit, 7})
		c.Close(websocket.StatusNormalClosure, "")
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-1" {
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(api.ErrorBody{Error: api.Error{Code: api.CodeUnauthorized, Message: "no token"}})
			return
		}
		mux.ServeHTTP(w, r)
	}))
	defer srv.Close()

	c := client.New(client.WithHost(srv.URL+"/"), client.WithToken("tok-1"))
	if v, err := c.Version(t.Context()); err != nil || v != "v-test" {
		t.Fatalf("version: %q %v", v, err)
	}
	_, err := c.Sprite("x").Info(t.Context())
	var ce *client.Error
	if !errors.Is(err, client.ErrNotFound) || !errors.As(err, &ce) || ce.Status != 404 || ce.Hint != "wisp list" {
		t.Errorf("info: %#v, want a not-found *Error with its hint", err)
	}
	cmd := c.Sprite("x").CommandContext(t.Context(), "echo", "hi")
	out, err := cmd.Output()
	var ee *client.ExitError
	if string(out) != "hi\n" || !errors.As(err, &ee) || ee.Code != 7 || cmd.SessionID() != "s1" {
		t.Errorf("exec: %q %v (session %q)", out, err, cmd.SessionID())
	}

	bad := client.New(client.WithHost(srv.URL), client.WithToken("wrong"))
	if _, err := bad.Version(t.Context()); !errors.As(err, &ce) || ce.Code != api.CodeUnauthorized {
		t.Errorf("wrong token: %v", err)
	}
	if err := bad.Sprite("x").Command("echo", "hi").Run(); !errors.As(err, &ce) || ce.Code != api.CodeUnauthorized {
		t.Errorf("exec with a wrong token: %v", err)
	}
}

// TestErrorKinds: each error code the API sends is its kind again.
func TestErrorKinds(t *testing.T) {
	for code, kind := range map[string]error{
		api.CodeNotFound: client.ErrNotFound, api.CodeExists: client.ErrExists, api.CodeInvalid: client.ErrInvalid,
		api.CodeWrongState: client.ErrState, api.CodeUnavailable: client.ErrUnavailable, api.CodeNoSpace: client.ErrNoSpace,
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(api.ErrorBody{Error: api.Error{Code: code, Message: "m"}})
		}))
		_, err := client.New(client.WithHost(srv.URL)).Sprite("x").Info(t.Context())
		srv.Close()
		if !errors.Is(err, kind) {
			t.Errorf("%s: %v is not %v", code, err, kind)
		}
		for _, other := range []error{client.ErrNotFound, client.ErrExists, client.ErrInvalid} {
			if other != kind && errors.Is(err, other) {
				t.Errorf("%s: %v is also %v", code, err, other)
			}
		}
	}
}
