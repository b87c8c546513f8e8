package integration

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wisp-sh/wisp/internal/e2b/envd/process"
	"github.com/wisp-sh/wisp/internal/e2b/envd/process/processconnect"
	"github.com/wisp-sh/wisp/internal/image/imagetest"
)

// e2bSDK installs the published e2b npm package at the pinned version
// (scripts/e2b-sdk.sh, cached in the build dir) and returns its folder.
func e2bSDK(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("npm"); err != nil {
		t.Skip("npm not installed: the E2B SDK tests run the published SDK under Node.js")
	}
	dir := filepath.Join(binDir, "e2b-sdk")
	if os.Getenv("WISP_BIN") == "" {
		dir = filepath.Join("..", "bin", "e2b-sdk")
	}
	out, err := exec.Command("../scripts/e2b-sdk.sh", dir).Output()
	if err != nil {
		t.Fatalf("install the e2b SDK: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// logAddr waits for wispd's log line msg and returns its addr.
func (d *daemon) logAddr(msg string) string {
	d.t.Helper()
	re := regexp.MustCompile(`msg="` + regexp.QuoteMeta(msg) + `" addr=(\S+)`)
	var addr string
	waitFor(d.t, 30*time.Second, msg, func() bool {
		b, _ := os.ReadFile(d.logf.Name())
		m := re.FindAllSubmatch(b, -1)
		if len(m) > 0 {
			addr = string(m[len(m)-1][1])
		}
		return addr != ""
	})
	return addr
}

// e2bKey makes an E2B key over the unix socket (`wisp token create --e2b`).
func (d *daemon) e2bKey() string {
	d.t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.sock)
	}}}
	res, err := hc.Post("http://wisp/v1/tokens", "application/json", strings.NewReader(`{"name":"e2b-test","e2b":true}`))
	if err != nil {
		d.t.Fatal(err)
	}
	defer res.Body.Close()
	var tok struct{ Token string }
	if err := json.NewDecoder(res.Body).Decode(&tok); err != nil || !strings.HasPrefix(tok.Token, "e2b_") {
		d.t.Fatalf("create an E2B key: %s %v %q", res.Status, err, tok.Token)
	}
	return tok.Token
}

// TestE2BSDK runs programs written against the published e2b SDK,
// unchanged, against a real wispd with real sprites of the dev image
// (E2B's base template): the whole set on gVisor, the core on QEMU.
func TestE2BSDK(t *testing.T) {
	imagetest.NeedDev(t)
	sdk := e2bSDK(t)
	progs := map[string][]string{
		"gvisor": {"lifecycle", "commands", "pty", "files", "gethost", "timeout"},
		"qemu":   {"core"},
	}
	for _, backend := range backends() {
		t.Run(backend, func(t *testing.T) {
			d := startDaemon(t, &daemon{backend: backend, pool: 16, args: []string{"--default-disk", "4"}})
			api := d.logAddr("API listening over TCP (bearer tokens: wisp token create)")
			front := d.logAddr("front door listening")
			key := d.e2bKey()
			// The programs run from a folder of their own whose
			// node_modules is the installed SDK's.
			run := t.TempDir()
			if err := os.Symlink(filepath.Join(sdk, "node_modules"), filepath.Join(run, "node_modules")); err != nil {
				t.Fatal(err)
			}
			srcs, _ := filepath.Glob("e2b/*.mjs")
			for _, src := range srcs {
				b, err := os.ReadFile(src)
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(filepath.Join(run, filepath.Base(src)), b, 0o644)
			}
			for _, prog := range progs[backend] {
				t.Run(prog, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
					defer cancel()
					cmd := exec.CommandContext(ctx, "node", prog+".mjs")
					cmd.Dir = run
					cmd.Env = append(os.Environ(),
						"E2B_API_URL=http://"+api, "E2B_SANDBOX_URL=http://"+api,
						"E2B_API_KEY="+key, "FRONT_DOOR="+front)
					out, err := cmd.CombinedOutput()
					t.Logf("%s:\n%s", prog, out)
					if err != nil {
						t.Fatalf("%s: %v", prog, err)
					}
				})
			}
			if backend == "gvisor" {
				t.Run("binary-codec", func(t *testing.T) { e2bBinaryCodec(t, api, key) })
			}
			// Every sandbox the programs made is gone, and so is the
			// throwaway sprite a template's image is derived in (in the
			// background: it may still be booting).
			waitFor(t, 5*time.Minute, "no sprites left", func() bool { return len(d.list()) == 0 })
		})
	}
}

// e2bBinaryCodec calls envd's process service with Connect's binary
// (protobuf) codec, which the JS SDK does not use: a create over REST,
// then Start from connect-go's generated client.
func e2bBinaryCodec(t *testing.T, api, key string) {
	req, _ := http.NewRequest("POST", "http://"+api+"/v2/sandboxes", strings.NewReader(`{"templateID":"base","timeout":120}`))
	req.Header.Set("X-API-Key", key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var sb struct{ SandboxID, EnvdAccessToken string }
	json.NewDecoder(res.Body).Decode(&sb)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated || sb.EnvdAccessToken == "" {
		t.Fatalf("create: %s %+v", res.Status, sb)
	}
	defer func() {
		req, _ := http.NewRequest("DELETE", "http://"+api+"/sandboxes/"+sb.SandboxID, nil)
		req.Header.Set("X-API-Key", key)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	}()
	c := processconnect.NewProcessClient(http.DefaultClient, "http://"+api) // binary codec: connect-go's default
	sreq := connect.NewRequest(&process.StartRequest{Process: &process.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", "echo binary; id -un"}}})
	sreq.Header().Set("E2b-Sandbox-Id", sb.SandboxID)
	sreq.Header().Set("X-Access-Token", sb.EnvdAccessToken)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := c.Start(ctx, sreq)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var end *process.ProcessEvent_EndEvent
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		out.Write(ev.GetData().GetStdout())
		if e := ev.GetEnd(); e != nil {
			end = e
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if end == nil || end.ExitCode != 0 || out.String() != "binary\nuser\n" {
		t.Fatalf("Start over the binary codec: end %v, output %q", end, out.String())
	}
	// Without the sandbox's token envd refuses.
	bad := connect.NewRequest(&process.ListRequest{})
	bad.Header().Set("E2b-Sandbox-Id", sb.SandboxID)
	bad.Header().Set("X-Access-Token", "wrong")
	if _, err := c.List(ctx, bad); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("List with a wrong token: %v, want unauthenticated", err)
	}
}
