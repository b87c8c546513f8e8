package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestMCP uses `wisp mcp` as an agent would, through the MCP go-sdk's own
// client over stdio: it makes a sprite, writes code and a test, sees the
// test fail, fixes the code, checkpoints, breaks the sprite, restores it
// and sees the test pass again.
func TestMCP(t *testing.T) {
	d := newDaemon(t, "gvisor")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.Command(filepath.Join(binDir, "wisp"), "mcp")
	cmd.Env = append(os.Environ(), "WISP_SOCKET="+d.sock)
	cmd.Stderr = os.Stderr
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "wisp-test-agent", Version: "1"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if inst := cs.InitializeResult().Instructions; !strings.Contains(inst, "sprite") {
		t.Errorf("instructions %q", inst)
	}

	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tools.Tools) != 10 {
		t.Errorf("%d tools, want 10", len(tools.Tools))
	}

	// call calls a tool and returns its structured answer and its text;
	// wantErr says whether the tool should fail.
	call := func(name string, args map[string]any, wantErr bool) (map[string]any, string) {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var text strings.Builder
		for _, c := range res.Content {
			if tc, ok := c.(*mcp.TextContent); ok {
				text.WriteString(tc.Text)
			}
		}
		if res.IsError != wantErr {
			t.Fatalf("%s %v: error %v, want %v: %s", name, args, res.IsError, wantErr, text.String())
		}
		var out map[string]any
		if res.StructuredContent != nil {
			b, _ := json.Marshal(res.StructuredContent)
			json.Unmarshal(b, &out)
		}
		return out, text.String()
	}
	runTest := func() (float64, string) {
		out, text := call("sprite_exec", map[string]any{"sprite": "agent", "command": "cd /home/sprite/app && sh test.sh", "timeout_s": 60}, false)
		return out["exit_code"].(float64), text
	}

	if out, _ := call("sprite_create", map[string]any{"name": "agent"}, false); out["name"] != "agent" || out["state"] != "running" {
		t.Fatalf("create: %v", out)
	}
	call("sprite_write_file", map[string]any{"sprite": "agent", "path": "/home/sprite/app/add.sh", "content": "echo $(( $1 - $2 ))\n"}, false)
	call("sprite_write_file", map[string]any{"sprite": "agent", "path": "/home/sprite/app/test.sh", "content": `got=$(sh add.sh 2 3)
if [ "$got" != 5 ]; then echo "FAIL: add 2 3 = $got, want 5" >&2; exit 1; fi
echo PASS
`}, false)
	if code, text := runTest(); code != 1 || !strings.Contains(text, "FAIL: add 2 3 = -1") {
		t.Fatalf("the failing test: exit %v\n%s", code, text)
	}
	if out, _ := call("sprite_read_file", map[string]any{"sprite": "agent", "path": "/home/sprite/app/add.sh"}, false); out["content"] != "echo $(( $1 - $2 ))\n" {
		t.Fatalf("read back: %v", out)
	}
	call("sprite_write_file", map[string]any{"sprite": "agent", "path": "/home/sprite/app/add.sh", "content": "echo $(( $1 + $2 ))\n"}, false)
	if code, text := runTest(); code != 0 || !strings.Contains(text, "PASS") {
		t.Fatalf("the fixed test: exit %v\n%s", code, text)
	}
	cp, _ := call("sprite_checkpoint", map[string]any{"sprite": "agent", "comment": "tests pass"}, false)
	id, _ := cp["id"].(string)
	if id == "" {
		t.Fatalf("checkpoint: %v", cp)
	}

	// Break it: the code gone, the test with it.
	call("sprite_exec", map[string]any{"sprite": "agent", "command": "rm -rf /home/sprite/app"}, false)
	if code, text := runTest(); code == 0 {
		t.Fatalf("the test passed in a broken sprite:\n%s", text)
	}
	if out, _ := call("sprite_restore", map[string]any{"sprite": "agent", "checkpoint": id}, false); out["state"] != "running" {
		t.Fatalf("restore: %v", out)
	}
	if code, text := runTest(); code != 0 || !strings.Contains(text, "PASS") {
		t.Fatalf("the test after restore: exit %v\n%s", code, text)
	}

	// A large output is cut with a note; a command past its time is ended.
	out, _ := call("sprite_exec", map[string]any{"sprite": "agent", "command": "seq 1 200000; echo END"}, false)
	if s, _ := out["stdout"].(string); len(s) > 40<<10 || !strings.HasSuffix(s, "END\n") || !strings.HasPrefix(s, "1\n2\n") || !strings.Contains(out["note"].(string), "cut") {
		t.Fatalf("large output: %d bytes, note %v", len(s), out["note"])
	}
	t0 := time.Now()
	out, _ = call("sprite_exec", map[string]any{"sprite": "agent", "command": "echo started; sleep 600", "timeout_s": 2}, false)
	if out["timed_out"] != true || !strings.Contains(out["stdout"].(string), "started") || time.Since(t0) > time.Minute {
		t.Fatalf("timeout: %v after %s", out, time.Since(t0))
	}
	// ... and does not run on in the sprite.
	waitFor(t, time.Minute, "the timed-out command to end in the sprite", func() bool {
		out, _ := call("sprite_exec", map[string]any{"sprite": "agent", "command": "ps -o args | grep -c '^sleep 600' || true"}, false)
		return strings.TrimSpace(out["stdout"].(string)) == "0"
	})

	if out, _ := call("sprite_fork", map[string]any{"sprite": "agent", "new_name": "agent2", "checkpoint": id}, false); out["name"] != "agent2" {
		t.Fatalf("fork: %v", out)
	}
	if out, _ := call("sprite_list", nil, false); !strings.Contains(mustJSON(out), `"agent2"`) {
		t.Fatalf("list: %v", out)
	}
	if out, _ := call("sprite_url", map[string]any{"sprite": "agent", "port": 8080}, false); !strings.HasPrefix(out["url"].(string), "http://") {
		t.Fatalf("url: %v", out)
	}
	call("sprite_destroy", map[string]any{"sprite": "agent2"}, false)
	if _, text := call("sprite_exec", map[string]any{"sprite": "agent2", "command": "true"}, true); !strings.Contains(text, "not found") {
		t.Fatalf("exec in a destroyed sprite: %s", text)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
