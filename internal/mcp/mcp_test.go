package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// fake is a function-field Sprites: nil fields fail.
type fake struct {
	exec     func(ctx context.Context, argv []string, stdout, stderr io.Writer) (int, error)
	readFile func(path string, max int64) ([]byte, int64, error)
	create   func(name, image string) (Sprite, error)
}

var errNo = errors.New("not in this fake")

func (f *fake) Create(_ context.Context, name, image string) (Sprite, error) {
	if f.create == nil {
		return Sprite{}, errNo
	}
	return f.create(name, image)
}
func (f *fake) List(context.Context) ([]Sprite, error) { return nil, nil }
func (f *fake) Exec(ctx context.Context, _ string, argv []string, _ string, stdout, stderr io.Writer) (int, error) {
	return f.exec(ctx, argv, stdout, stderr)
}
func (f *fake) ReadFile(_ context.Context, _, path string, max int64) ([]byte, int64, error) {
	return f.readFile(path, max)
}
func (f *fake) WriteFile(context.Context, string, string, []byte, fs.FileMode) error { return errNo }
func (f *fake) Checkpoint(context.Context, string, string) (Checkpoint, error) {
	return Checkpoint{}, errNo
}
func (f *fake) Restore(context.Context, string, string) (Sprite, error)      { return Sprite{}, errNo }
func (f *fake) Fork(context.Context, string, string, string) (Sprite, error) { return Sprite{}, errNo }
func (f *fake) URL(context.Context, string, int, time.Duration) (URL, error) { return URL{}, errNo }
func (f *fake) Destroy(context.Context, string) error                        { return errNo }

func connect(t *testing.T, sp Sprites) *sdk.ClientSession {
	t.Helper()
	ct, st := sdk.NewInMemoryTransports()
	ctx := context.Background()
	ss, err := NewServer(sp, "test").Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "test"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func call(t *testing.T, cs *sdk.ClientSession, name string, args map[string]any) (*sdk.CallToolResult, string) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var text strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			text.WriteString(tc.Text)
		}
	}
	return res, text.String()
}

// Every tool is listed with a description and an object schema whose
// required arguments are the ones the tool cannot do without.
func TestToolsAndSchemas(t *testing.T) {
	cs := connect(t, &fake{})
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"sprite_create": {"name"}, "sprite_list": nil, "sprite_exec": {"command", "sprite"},
		"sprite_read_file": {"path", "sprite"}, "sprite_write_file": {"content", "path", "sprite"},
		"sprite_checkpoint": {"sprite"}, "sprite_restore": {"checkpoint", "sprite"},
		"sprite_fork": {"new_name", "sprite"}, "sprite_url": {"sprite"}, "sprite_destroy": {"sprite"},
	}
	for _, tool := range res.Tools {
		req, ok := want[tool.Name]
		if !ok {
			t.Errorf("unexpected tool %s", tool.Name)
			continue
		}
		delete(want, tool.Name)
		if len(tool.Description) < 40 {
			t.Errorf("%s: description %q too thin for a model", tool.Name, tool.Description)
		}
		b, _ := json.Marshal(tool.InputSchema)
		var schema struct {
			Type       string         `json:"type"`
			Required   []string       `json:"required"`
			Properties map[string]any `json:"properties"`
		}
		json.Unmarshal(b, &schema)
		slices.Sort(schema.Required)
		for name, prop := range schema.Properties {
			if d, _ := prop.(map[string]any)["description"].(string); d == "" {
				t.Errorf("%s: argument %s has no description", tool.Name, name)
			}
		}
		if schema.Type != "object" || strings.Join(schema.Required, ",") != strings.Join(req, ",") {
			t.Errorf("%s: schema %s, want required %v", tool.Name, b, req)
		}
	}
	if len(want) > 0 {
		t.Errorf("missing tools: %v", want)
	}
	// Arguments that do not fit the schema are refused before the tool.
	if res, _ := call(t, cs, "sprite_exec", map[string]any{"sprite": "a"}); !res.IsError {
		t.Error("exec without a command was not refused")
	}
}

func TestExecAnswers(t *testing.T) {
	var gotArgv []string
	f := &fake{exec: func(ctx context.Context, argv []string, stdout, stderr io.Writer) (int, error) {
		gotArgv = argv
		if strings.Contains(argv[2], "sleep") {
			<-ctx.Done()
			io.WriteString(stdout, "partial")
			return 0, ctx.Err()
		}
		if strings.Contains(argv[2], "flood") {
			for i := 0; i < 10000; i++ {
				io.WriteString(stdout, strings.Repeat("x", 99)+"\n")
			}
			io.WriteString(stdout, "THE END\n")
			return 0, nil
		}
		io.WriteString(stdout, "ok 1\n")
		io.WriteString(stderr, "FAIL: TestX\n")
		return 1, nil
	}}
	cs := connect(t, f)

	res, text := call(t, cs, "sprite_exec", map[string]any{"sprite": "a", "command": "go test ./... && echo done"})
	if res.IsError || strings.Join(gotArgv, "|") != "/bin/sh|-c|go test ./... && echo done" {
		t.Fatalf("exec: %v %q (argv %q)", res.IsError, text, gotArgv)
	}
	var out ExecOut
	b, _ := json.Marshal(res.StructuredContent)
	json.Unmarshal(b, &out)
	if out.ExitCode != 1 || out.Stdout != "ok 1\n" || out.Stderr != "FAIL: TestX\n" || !strings.Contains(text, "exit code 1") || !strings.Contains(text, "FAIL: TestX") {
		t.Fatalf("exec answer %+v / %q", out, text)
	}

	res, text = call(t, cs, "sprite_exec", map[string]any{"sprite": "a", "command": "flood"})
	b, _ = json.Marshal(res.StructuredContent)
	json.Unmarshal(b, &out)
	if len(out.Stdout) > MaxStream+100 || !strings.HasSuffix(out.Stdout, "THE END\n") || !strings.HasPrefix(out.Stdout, "xxx") || !strings.Contains(out.Stdout, "bytes cut here") || !strings.Contains(out.Note, "cut") {
		t.Fatalf("flood: %d bytes, note %q, tail %q", len(out.Stdout), out.Note, out.Stdout[len(out.Stdout)-20:])
	}

	res, text = call(t, cs, "sprite_exec", map[string]any{"sprite": "a", "command": "sleep 100", "timeout_s": 1})
	b, _ = json.Marshal(res.StructuredContent)
	json.Unmarshal(b, &out)
	if res.IsError || !out.TimedOut || out.ExitCode != -1 || out.Stdout != "partial" || !strings.Contains(text, "timed out") {
		t.Fatalf("timeout: %+v %q", out, text)
	}
}

type hintErr struct{ error }

func (hintErr) Hint() string { return "wisp image build dev" }

func TestErrorsCarryHints(t *testing.T) {
	cs := connect(t, &fake{create: func(name, image string) (Sprite, error) {
		return Sprite{}, hintErr{errors.New(`image "dev" is not built`)}
	}})
	res, text := call(t, cs, "sprite_create", map[string]any{"name": "x"})
	if !res.IsError || !strings.Contains(text, "not built") || !strings.Contains(text, "wisp image build dev") {
		t.Fatalf("create error: %v %q", res.IsError, text)
	}
}

func TestReadFile(t *testing.T) {
	content := map[string][]byte{"/t": []byte("héllo\n"), "/bin": {0xff, 0xfe, 0, 1}, "/big": bytes.Repeat([]byte("é"), MaxRead)}
	cs := connect(t, &fake{readFile: func(path string, max int64) ([]byte, int64, error) {
		b := content[path]
		return b[:min(int64(len(b)), max)], int64(len(b)), nil
	}})
	if res, text := call(t, cs, "sprite_read_file", map[string]any{"sprite": "a", "path": "/t"}); res.IsError || !strings.Contains(text, `héllo`) {
		t.Errorf("text file: %q", text)
	}
	if res, text := call(t, cs, "sprite_read_file", map[string]any{"sprite": "a", "path": "/bin"}); !res.IsError || !strings.Contains(text, "not text") {
		t.Errorf("binary file: %q", text)
	}
	if res, text := call(t, cs, "sprite_read_file", map[string]any{"sprite": "a", "path": "rel"}); !res.IsError || !strings.Contains(text, "absolute") {
		t.Errorf("relative path: %q", text)
	}
	res, _ := call(t, cs, "sprite_read_file", map[string]any{"sprite": "a", "path": "/big"})
	var out ReadOut
	b, _ := json.Marshal(res.StructuredContent)
	json.Unmarshal(b, &out)
	if res.IsError || out.Size != int64(2*MaxRead) || len(out.Content) > MaxRead || len(out.Content) < MaxRead-4 || !strings.Contains(out.Note, "first") {
		t.Errorf("big file: error %v, %d bytes of %d, note %q", res.IsError, len(out.Content), out.Size, out.Note)
	}
}

func TestCapped(t *testing.T) {
	for _, n := range []int{0, 5, 10, 11, 100, 1000} {
		c := &capped{max: 10}
		var all []byte
		for i := 0; i < n; i++ {
			b := []byte{byte('a' + i%26)}
			all = append(all, b...)
			c.Write(b)
		}
		got := c.String()
		if n <= 10 {
			if got != string(all) || c.cut() != 0 {
				t.Errorf("n=%d: %q, cut %d", n, got, c.cut())
			}
			continue
		}
		if !strings.HasPrefix(got, string(all[:5])) || !strings.HasSuffix(got, string(all[n-5:])) || c.cut() != int64(n-10) {
			t.Errorf("n=%d: %q, cut %d", n, got, c.cut())
		}
	}
}
