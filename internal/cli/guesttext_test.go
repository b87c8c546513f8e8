package cli

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// hostile is text a guest controls: it sets the terminal's title, clears
// the screen and sends a CSI in its C1 form.
const hostile = "boot failed\x1b]0;owned\x07\x1b[2J\u009b6n"

// TestGuestTextNotToTerminal: a sprite's last error and an error message
// carrying guest text reach the terminal without their control characters.
func TestGuestTextNotToTerminal(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/sprites/good", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"name": "good", "state": "stopped", "last_error": hostile})
	})
	mux.HandleFunc("GET /v1/sprites/bad", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusConflict)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "state", "message": hostile, "hint": hostile}})
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	for _, name := range []string{"good", "bad"} {
		var out, errOut bytes.Buffer
		code := run(&env{socket: sock, stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}, []string{"info", name, "--socket", sock})
		got := out.String() + errOut.String()
		if !strings.Contains(got, "boot failed") {
			t.Fatalf("info %s (exit %d): %q, want the error shown", name, code, got)
		}
		if strings.ContainsAny(got, "\x1b\x07\u009b") {
			t.Errorf("info %s printed control characters: %q", name, got)
		}
	}
}
