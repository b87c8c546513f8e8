package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/wisp-sh/wisp/internal/image/imagetest"
	"github.com/wisp-sh/wisp/internal/network/nettest"
)

// fakeAnthropic is a scripted Anthropic Messages API: to a request that
// offers the Write tool and carries no tool result yet, it answers (as an
// SSE stream, as the real API does) with a Write of path; to the request
// that carries the tool's result, with a text that ends the turn; to
// anything else (side requests a client may make), with a short text.
type fakeAnthropic struct {
	path, content string

	mu    sync.Mutex
	calls []string // what each request was answered with
}

func (f *fakeAnthropic) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/v1/messages") {
		if strings.HasSuffix(r.URL.Path, "/count_tokens") {
			fmt.Fprint(w, `{"input_tokens": 10}`)
			return
		}
		http.NotFound(w, r)
		return
	}
	var req struct {
		Stream bool `json:"stream"`
		Tools  []struct {
			Name string `json:"name"`
		} `json:"tools"`
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, `{"type":"error","error":{"type":"invalid_request_error","message":"bad json"}}`, 400)
		return
	}
	hasWrite := false
	for _, t := range req.Tools {
		hasWrite = hasWrite || t.Name == "Write"
	}
	hasResult := false
	if n := len(req.Messages); n > 0 {
		hasResult = strings.Contains(string(req.Messages[n-1].Content), `"tool_result"`)
	}
	kind := "text"
	switch {
	case hasWrite && hasResult:
		kind = "done"
	case hasWrite:
		kind = "write"
	}
	f.mu.Lock()
	f.calls = append(f.calls, kind)
	f.mu.Unlock()

	var block, delta map[string]any
	stop := "end_turn"
	switch kind {
	case "write":
		input, _ := json.Marshal(map[string]string{"file_path": f.path, "content": f.content})
		block = map[string]any{"type": "tool_use", "id": "toolu_wisp_1", "name": "Write", "input": map[string]any{}}
		delta = map[string]any{"type": "input_json_delta", "partial_json": string(input)}
		stop = "tool_use"
	case "done":
		block = map[string]any{"type": "text", "text": ""}
		delta = map[string]any{"type": "text_delta", "text": "I wrote the file."}
	default:
		block = map[string]any{"type": "text", "text": ""}
		delta = map[string]any{"type": "text_delta", "text": "ok"}
	}
	msg := map[string]any{"id": "msg_wisp", "type": "message", "role": "assistant", "model": "claude-fake",
		"content": []any{}, "stop_reason": nil, "stop_sequence": nil,
		"usage": map[string]int{"input_tokens": 10, "output_tokens": 1}}
	if !req.Stream {
		b := block
		if kind == "write" {
			b = map[string]any{"type": "tool_use", "id": "toolu_wisp_1", "name": "Write", "input": json.RawMessage(delta["partial_json"].(string))}
		} else {
			b = map[string]any{"type": "text", "text": delta["text"]}
		}
		msg["content"], msg["stop_reason"] = []any{b}, stop
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(msg)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	send := func(event string, data any) {
		b, _ := json.Marshal(data)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
		w.(http.Flusher).Flush()
	}
	send("message_start", map[string]any{"type": "message_start", "message": msg})
	send("content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": block})
	send("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": delta})
	send("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
	send("message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": stop, "stop_sequence": nil}, "usage": map[string]int{"output_tokens": 20}})
	send("message_stop", map[string]any{"type": "message_stop"})
}

func (f *fakeAnthropic) answered() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// TestClaudeCode runs the product's main use end to end without a real
// key: Claude Code in a dev sprite, pointed (ANTHROPIC_BASE_URL, through an
// explicit egress allow of that one address) at a scripted Messages API
// in the test's outside namespace, writes a file with its Write tool. The
// key comes in as a secret; nonessential traffic is off.
func TestClaudeCode(t *testing.T) {
	imagetest.NeedDev(t)
	out := nettest.Start(t, testNetCIDR)
	fake := &fakeAnthropic{path: "/home/sprite/hello.txt", content: "hello from claude\n"}
	nettest.Serve(t, 8443, fake)
	backend := backends()[len(backends())-1] // auto's choice here: gVisor where runsc is installed
	d := startDaemon(t, &daemon{backend: backend, pool: 12, args: []string{"--hosts-file", out.Hosts, "--dns-upstream", out.DNS}})
	d.ok("create", "c", "--image", "dev", "--memory", "1024", "--disk", "4", "--idle", "never",
		"--allow", nettest.OutsideIP.String()+"/32")
	base := fmt.Sprintf("http://%s:8443", nettest.OutsideIP)
	o, errOut, code := d.wisp(nil, "exec", "c", "--dir", "/home/sprite",
		"--env", "ANTHROPIC_BASE_URL="+base, "--env", "ANTHROPIC_API_KEY=sk-ant-fake-key-for-tests",
		"--env", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1", "--env", "DISABLE_AUTOUPDATER=1",
		"--", "timeout", "240", "claude", "-p", "Write hello from claude into /home/sprite/hello.txt",
		"--allowedTools", "Write", "--model", "claude-fake")
	if code != 0 {
		t.Fatalf("claude -p: exit %d\nstdout: %s\nstderr: %s\nthe fake API answered: %v", code, o, errOut, fake.answered())
	}
	if got := d.ok("exec", "c", "--", "cat", "/home/sprite/hello.txt"); got != fake.content {
		t.Errorf("the file Claude wrote holds %q, want %q", got, fake.content)
	}
	calls := fake.answered()
	if !slices.Contains(calls, "write") || !slices.Contains(calls, "done") {
		t.Errorf("the fake API answered %v: want a Write and then the end of the turn", calls)
	}
	t.Logf("claude -p: %q; the fake API answered %v", strings.TrimSpace(o), calls)
}
