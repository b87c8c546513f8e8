package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// tcpAddr asks the daemon, over its socket, where it serves the API over
// TCP (the harness starts it with --listen 127.0.0.1:0).
func (d *daemon) tcpAddr() string {
	d.t.Helper()
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.sock)
	}}}
	resp, err := hc.Get("http://wisp/v1/version")
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct{ Listen string }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.Listen == "" {
		d.t.Fatalf("version names no TCP address: %v %+v", err, v)
	}
	return v.Listen
}

// remote runs the CLI against the daemon over TCP, with WISP_HOST and
// WISP_TOKEN (flags, if flags) and no usable socket.
func (d *daemon) remote(token string, flags bool, args ...string) (string, string, int) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	host := "http://" + d.tcpAddr()
	if flags {
		args = append([]string{"--host", host, "--token", token}, args...)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "wisp"), args...)
	env := []string{"WISP_SOCKET=" + filepath.Join(d.dir, "no-such.sock")}
	if !flags {
		env = append(env, "WISP_HOST="+host, "WISP_TOKEN="+token)
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WISP_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatalf("wisp %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// newToken makes a token with the CLI on the socket and returns its secret.
func (d *daemon) newToken(args ...string) string {
	d.t.Helper()
	var tok struct{ Name, Token string }
	out := d.ok(append([]string{"token", "create", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &tok); err != nil || !strings.HasPrefix(tok.Token, "wisp_") {
		d.t.Fatalf("token create %v: %q (%v)", args, out, err)
	}
	return tok.Token
}

// TestRemote drives a daemon over TCP as a remote user would: the CLI with
// a token creates a sprite and runs a command in it; a token scoped to
// one sprite sees only it; a revoked token opens nothing.
func TestRemote(t *testing.T) {
	d := newDaemon(t, "gvisor")
	full := d.newToken("--name", "laptop")

	if out, errOut, code := d.remote(full, false, "create", "far"); code != 0 {
		t.Fatalf("remote create: exit %d %s %s", code, out, errOut)
	}
	if out, errOut, code := d.remote(full, true, "exec", "far", "--", "sh", "-c", "echo hello from $(hostname); exit 3"); code != 3 || !strings.Contains(out, "hello from far") {
		t.Fatalf("remote exec: exit %d, out %q, err %q", code, out, errOut)
	}
	d.ok("create", "near")

	scoped := d.newToken("--name", "only-far", "--sprite", "far")
	if out, errOut, code := d.remote(scoped, false, "list", "--json"); code != 0 || !strings.Contains(out, `"far"`) || strings.Contains(out, `"near"`) {
		t.Fatalf("scoped list: exit %d %q %q", code, out, errOut)
	}
	if out, errOut, code := d.remote(scoped, false, "exec", "near", "--", "true"); code == 0 || !strings.Contains(errOut, "not found") {
		t.Fatalf("scoped exec in another sprite: exit %d %q %q, want not found", code, out, errOut)
	}
	if out, errOut, code := d.remote(scoped, false, "exec", "far", "--", "echo", "mine"); code != 0 || out != "mine\n" {
		t.Fatalf("scoped exec in its sprite: exit %d %q %q", code, out, errOut)
	}
	if _, errOut, code := d.remote(scoped, false, "create", "third"); code == 0 || !strings.Contains(errOut, "scoped") {
		t.Fatalf("scoped create: exit %d %q, want refused", code, errOut)
	}
	if _, errOut, code := d.remote(full, false, "token", "list"); code == 0 || !strings.Contains(errOut, "unix socket") {
		t.Fatalf("token list over TCP: exit %d %q, want refused", code, errOut)
	}

	// wisp mcp over TCP with the scoped token: its tools see what it sees.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.Command(filepath.Join(binDir, "wisp"), "mcp")
	cmd.Env = append(os.Environ(), "WISP_SOCKET=/nonexistent", "WISP_HOST=http://"+d.tcpAddr(), "WISP_TOKEN="+scoped)
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "remote-agent", Version: "1"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "sprite_list"})
	if err != nil || res.IsError || !strings.Contains(mustJSON(res.StructuredContent), `"far"`) || strings.Contains(mustJSON(res.StructuredContent), `"near"`) {
		t.Fatalf("mcp sprite_list with the scoped token: %v %+v", err, res)
	}
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "sprite_exec", Arguments: map[string]any{"sprite": "near", "command": "true"}})
	if err != nil || !res.IsError {
		t.Fatalf("mcp exec in another sprite with the scoped token: %v %+v", err, res)
	}
	cs.Close()

	// An E2B key has its own form, and opens nothing of wisp's API.
	var key struct{ Token, Kind string }
	json.Unmarshal([]byte(d.ok("token", "create", "--name", "sdk", "--e2b", "--json")), &key)
	if !strings.HasPrefix(key.Token, "e2b_") || len(key.Token) != 44 || key.Kind != "e2b" {
		t.Fatalf("e2b key %+v", key)
	}
	if _, _, code := d.remote(key.Token, false, "list"); code == 0 {
		t.Fatal("an e2b key opened wisp's API")
	}

	list := d.ok("token", "list", "--json")
	if !strings.Contains(list, `"laptop"`) || !strings.Contains(list, `"only-far"`) || strings.Contains(list, full) || strings.Contains(list, scoped) {
		t.Fatalf("token list: %s", list)
	}
	// A revoke ends what the token has open: an exec in flight.
	bg := exec.Command(filepath.Join(binDir, "wisp"), "--host", "http://"+d.tcpAddr(), "--token", full, "exec", "far", "--", "sleep", "600")
	bg.Env = append(os.Environ(), "WISP_SOCKET=/nonexistent")
	if err := bg.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- bg.Wait() }()
	defer bg.Process.Kill()
	waitFor(t, time.Minute, "the exec over TCP to run", func() bool {
		out, _, _ := d.wisp(nil, "exec", "far", "--", "ps", "-o", "args")
		return strings.Contains(out, "sleep 600")
	})
	d.ok("token", "revoke", "laptop")
	select {
	case err := <-exited:
		if err == nil {
			t.Fatal("the exec of a revoked token exited 0")
		}
	case <-time.After(time.Minute):
		t.Fatal("the exec of a revoked token still runs a minute after the revoke")
	}
	waitFor(t, time.Minute, "the revoked token's command to end in the sprite", func() bool {
		out, _, _ := d.wisp(nil, "exec", "far", "--", "ps", "-o", "args")
		return !strings.Contains(out, "sleep 600")
	})
	if _, errOut, code := d.remote(full, false, "list"); code == 0 || !strings.Contains(errOut, "revoked") {
		t.Fatalf("revoked token: exit %d %q, want 401", code, errOut)
	}
	// The other token still works.
	if _, errOut, code := d.remote(scoped, true, "info", "far"); code != 0 {
		t.Fatalf("scoped token after another's revoke: exit %d %q", code, errOut)
	}
}
