package cli

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wisp-sh/wisp/api"
)

// TestHostAndToken: --host and --token (or WISP_HOST and WISP_TOKEN) send
// the CLI's requests over TCP with the bearer token instead of to the
// socket; the flags win over the environment.
func TestHostAndToken(t *testing.T) {
	var auth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = append(auth, r.Header.Get("Authorization"))
		json.NewEncoder(w).Encode([]api.Sprite{{Name: "over-tcp", State: api.StateRunning}})
	}))
	defer srv.Close()
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"--host", srv.URL, "--token", "t1"}, "Bearer t1"},
		{map[string]string{"WISP_HOST": srv.URL, "WISP_TOKEN": "t2"}, nil, "Bearer t2"},
		{map[string]string{"WISP_HOST": "http://127.0.0.1:1", "WISP_TOKEN": "t3"}, []string{"--host", srv.URL, "--token", "t4"}, "Bearer t4"},
	} {
		auth = nil
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		var out, errOut bytes.Buffer
		code := run(&env{socket: "/nonexistent.sock", stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}, append([]string{"list"}, tc.args...))
		if code != 0 || !strings.Contains(out.String(), "over-tcp") || len(auth) != 1 || auth[0] != tc.want {
			t.Errorf("%v %v: exit %d, %q %q, auth %q, want %q", tc.env, tc.args, code, out.String(), errOut.String(), auth, tc.want)
		}
	}
}
