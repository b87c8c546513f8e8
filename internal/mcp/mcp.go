// Package mcp serves wisp to AI agents as a Model Context Protocol server
// (`wisp mcp`, over stdio): tools to create sprites, run commands and
// move files in them, checkpoint and restore them, fork them, open their
// URLs and destroy them. Each tool's description and argument schema are
// written for a model, which reads them to decide what to call.
//
// The tools reach wispd through the public client package (client.go);
// they see it through the small Sprites interface below.
package mcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Sprites is what the tools need of a wispd. Errors carry the daemon's
// message (and, through Hint, its suggestion), which the model reads.
type Sprites interface {
	Create(ctx context.Context, name, image string) (Sprite, error)
	List(ctx context.Context) ([]Sprite, error)
	// Exec runs argv in the sprite (its default user, dir if not empty)
	// and returns its exit code. When ctx ends the command is ended too.
	Exec(ctx context.Context, sprite string, argv []string, dir string, stdout, stderr io.Writer) (int, error)
	// ReadFile returns at most max bytes of the file and its size.
	ReadFile(ctx context.Context, sprite, path string, max int64) ([]byte, int64, error)
	// WriteFile writes data to path (its parent directories made),
	// owned by the sprite's default user.
	WriteFile(ctx context.Context, sprite, path string, data []byte, mode fs.FileMode) error
	Checkpoint(ctx context.Context, sprite, comment string) (Checkpoint, error)
	Restore(ctx context.Context, sprite, id string) (Sprite, error)
	Fork(ctx context.Context, sprite, newName, from string) (Sprite, error)
	URL(ctx context.Context, sprite string, port int, ttl time.Duration) (URL, error)
	Destroy(ctx context.Context, sprite string) error
}

// Hinter is an error that carries the daemon's suggestion.
type Hinter interface{ Hint() string }

// Sprite is a sprite as the tools report it.
type Sprite struct {
	Name        string       `json:"name"`
	State       string       `json:"state" jsonschema:"running, sleeping (wakes by itself on use), stopped (starts by itself on use), or a transition"`
	Image       string       `json:"image,omitempty"`
	Backend     string       `json:"backend,omitempty" jsonschema:"qemu (a microVM) or gvisor (a sandbox)"`
	Checkpoints []Checkpoint `json:"checkpoints,omitempty" jsonschema:"oldest first"`
}

// Checkpoint is a saved state of a sprite's disk.
type Checkpoint struct {
	ID      string    `json:"id"`
	Comment string    `json:"comment,omitempty"`
	Created time.Time `json:"created_at"`
}

// URL is where a sprite's web server answers.
type URL struct {
	URL     string    `json:"url" jsonschema:"open it in a browser or with curl on the user's machine"`
	Port    int       `json:"port" jsonschema:"the port in the sprite it reaches"`
	Expires time.Time `json:"expires_at,omitzero" jsonschema:"when its credential stops working"`
}

// Bounds of what a tool answers, so one call cannot flood a model's
// context.
const (
	// MaxStream is how much of stdout or of stderr exec answers: the
	// first and the last parts, with a note where the middle was cut.
	MaxStream = 32 << 10
	// MaxRead is how much of a file read_file answers.
	MaxRead = 256 << 10
	// MaxWrite bounds the content of write_file.
	MaxWrite = 8 << 20
	// DefaultTimeout and MaxTimeout bound a command of exec.
	DefaultTimeout = 120 * time.Second
	MaxTimeout     = time.Hour
)

// Instructions is what the server tells a model about itself.
const Instructions = `wisp gives you sprites: persistent, isolated Linux computers on the user's machine (real VMs or gVisor sandboxes), each with its own disk, network and root access (sudo works). Nothing you do in a sprite can harm the user's machine, so install packages, run servers and tests, and experiment freely.

A typical session: sprite_create (or sprite_list to find an existing one), sprite_write_file and sprite_exec to work, sprite_checkpoint before a risky change, sprite_restore to undo it, sprite_fork to try two approaches side by side, sprite_url to show the user a web server running in a sprite, sprite_destroy when the user no longer needs it. Sprites keep their files across calls and restarts; an idle sprite sleeps and wakes by itself on its next use.`

// NewServer returns the MCP server with wisp's tools, backed by sp.
func NewServer(sp Sprites, version string) *sdk.Server {
	s := sdk.NewServer(&sdk.Implementation{Name: "wisp", Title: "wisp sprites", Version: version}, &sdk.ServerOptions{Instructions: Instructions})
	t := &tools{sp: sp}
	yes, no := true, false
	sdk.AddTool(s, &sdk.Tool{
		Name:        "sprite_create",
		Description: "Create a new sprite: a persistent, isolated Linux computer (the default dev image is Debian with sudo, git, gh, build tools, Go, Python, Node.js and Claude Code) that you can run commands in. It boots in about a second and keeps its disk until destroyed. Pick a short name that says what it is for; names are lowercase letters, digits and '-'.",
		Annotations: &sdk.ToolAnnotations{Title: "Create sprite", DestructiveHint: &no, OpenWorldHint: &no},
	}, t.create)
	sdk.AddTool(s, &sdk.Tool{
		Name:        "sprite_list",
		Description: "List the sprites on this machine with their state, image and checkpoints (ids, for sprite_restore and sprite_fork).",
		Annotations: &sdk.ToolAnnotations{Title: "List sprites", ReadOnlyHint: true, OpenWorldHint: &no},
	}, t.list)
	sdk.AddTool(s, &sdk.Tool{
		Name: "sprite_exec",
		Description: "Run a shell command line in a sprite (with /bin/sh -c, so pipes, &&, redirections and quotes work) and return its stdout, stderr and exit code. " +
			"A non-zero exit code is a normal result (a failing test, a missing file), not an error of the tool. The command runs as the sprite's user (sudo for root), in its home directory unless dir says otherwise, with no terminal and no stdin: use non-interactive flags (apt-get -y, npm --yes). " +
			fmt.Sprintf("It is ended after timeout_s seconds (default %d, at most %d); start a server that must outlive the call detached, with its output in a file (setsid CMD >/tmp/CMD.log 2>&1 </dev/null &). Output beyond %d KiB per stream is cut in the middle with a note; redirect large output to a file and read the part you need.", int(DefaultTimeout.Seconds()), int(MaxTimeout.Seconds()), MaxStream>>10),
		Annotations: &sdk.ToolAnnotations{Title: "Run a command in a sprite", DestructiveHint: &yes, OpenWorldHint: &yes},
	}, t.exec)
	sdk.AddTool(s, &sdk.Tool{
		Name:        "sprite_read_file",
		Description: fmt.Sprintf("Read a text file in a sprite. Answers at most %d KiB (with a note when the file is longer); for binary files or parts of large ones, use sprite_exec (base64, head, tail, sed -n).", MaxRead>>10),
		Annotations: &sdk.ToolAnnotations{Title: "Read a file in a sprite", ReadOnlyHint: true, OpenWorldHint: &no},
	}, t.readFile)
	sdk.AddTool(s, &sdk.Tool{
		Name:        "sprite_write_file",
		Description: "Write a text file in a sprite, replacing it if it exists and making its parent directories; it is owned by the sprite's user. Use it for source files, configs and scripts rather than shell here-documents.",
		Annotations: &sdk.ToolAnnotations{Title: "Write a file in a sprite", DestructiveHint: &yes, IdempotentHint: true, OpenWorldHint: &no},
	}, t.writeFile)
	sdk.AddTool(s, &sdk.Tool{
		Name:        "sprite_checkpoint",
		Description: "Save the state of a sprite's disk as a checkpoint, in milliseconds, costing only the space of later changes. Take one before a risky change (a big refactor, an upgrade, rm -rf) so sprite_restore can undo it. Answers the checkpoint's id.",
		Annotations: &sdk.ToolAnnotations{Title: "Checkpoint a sprite", DestructiveHint: &no, OpenWorldHint: &no},
	}, t.checkpoint)
	sdk.AddTool(s, &sdk.Tool{
		Name:        "sprite_restore",
		Description: "Put a sprite's disk back as it was at a checkpoint, undoing every change made since (the sprite restarts; running processes end). Later checkpoints are kept. Checkpoint ids are in sprite_list.",
		Annotations: &sdk.ToolAnnotations{Title: "Restore a sprite", DestructiveHint: &yes, IdempotentHint: true, OpenWorldHint: &no},
	}, t.restore)
	sdk.AddTool(s, &sdk.Tool{
		Name:        "sprite_fork",
		Description: "Make a new sprite that is a copy of another (as it is now, or as it was at a checkpoint): same files and installed packages, its own name, address and identity. Use it to try two approaches side by side, or to hand a copy to another task.",
		Annotations: &sdk.ToolAnnotations{Title: "Fork a sprite", DestructiveHint: &no, OpenWorldHint: &no},
	}, t.fork)
	sdk.AddTool(s, &sdk.Tool{
		Name:        "sprite_url",
		Description: "Get a URL on the user's machine that reaches a web server listening in a sprite (on port, default the sprite's first service's, else 8080; the server must listen on 0.0.0.0, not 127.0.0.1). The URL carries a credential that expires after ttl_s seconds (default an hour); give it to the user to open in a browser, or fetch it with curl from the user's machine.",
		Annotations: &sdk.ToolAnnotations{Title: "URL of a sprite's web server", ReadOnlyHint: true, OpenWorldHint: &no},
	}, t.url)
	sdk.AddTool(s, &sdk.Tool{
		Name:        "sprite_destroy",
		Description: "Destroy a sprite with its disk and checkpoints, for good. Only when the user no longer needs it: there is no undo.",
		Annotations: &sdk.ToolAnnotations{Title: "Destroy a sprite", DestructiveHint: &yes, IdempotentHint: true, OpenWorldHint: &no},
	}, t.destroy)
	return s
}

type tools struct{ sp Sprites }

// result is a tool's answer: v, or the tool error of err.
func result[T any](v T, err error) (*sdk.CallToolResult, T, error) {
	if err != nil {
		var zero T
		return nil, zero, fail(err)
	}
	return nil, v, nil
}

// fail makes a tool error of err, with the daemon's hint when it has one:
// the model reads both.
func fail(err error) error {
	var h Hinter
	if errors.As(err, &h) && h.Hint() != "" {
		return fmt.Errorf("%w (hint: %s)", err, h.Hint())
	}
	return err
}

type CreateIn struct {
	Name  string `json:"name" jsonschema:"the new sprite's name: lowercase letters, digits and '-', at most 32"`
	Image string `json:"image,omitempty" jsonschema:"root image: dev (the default: Debian with build tools, Go, Python, Node.js, Claude Code), minimal (busybox), or one the user made"`
}

func (t *tools) create(ctx context.Context, _ *sdk.CallToolRequest, in CreateIn) (*sdk.CallToolResult, Sprite, error) {
	return result(t.sp.Create(ctx, in.Name, in.Image))
}

type ListOut struct {
	Sprites []Sprite `json:"sprites"`
}

func (t *tools) list(ctx context.Context, _ *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, ListOut, error) {
	l, err := t.sp.List(ctx)
	if err != nil {
		return nil, ListOut{}, fail(err)
	}
	if l == nil {
		l = []Sprite{}
	}
	return nil, ListOut{Sprites: l}, nil
}

type ExecIn struct {
	Sprite   string `json:"sprite" jsonschema:"the sprite to run it in"`
	Command  string `json:"command" jsonschema:"a shell command line, run with /bin/sh -c (e.g. 'cd app && go test ./...')"`
	Dir      string `json:"dir,omitempty" jsonschema:"working directory (absolute); default the user's home"`
	TimeoutS int    `json:"timeout_s,omitempty" jsonschema:"seconds before the command is ended (default 120, at most 3600)"`
}

type ExecOut struct {
	ExitCode int    `json:"exit_code" jsonschema:"the command's exit status (128+N when signal N ended it; -1 when it was ended at its timeout)"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	TimedOut bool   `json:"timed_out,omitempty"`
	Note     string `json:"note,omitempty" jsonschema:"what was cut or why the command ended"`
}

func (t *tools) exec(ctx context.Context, _ *sdk.CallToolRequest, in ExecIn) (*sdk.CallToolResult, ExecOut, error) {
	if strings.TrimSpace(in.Command) == "" {
		return nil, ExecOut{}, errors.New("command is empty")
	}
	if in.Dir != "" && !path.IsAbs(in.Dir) {
		return nil, ExecOut{}, fmt.Errorf("dir %q must be an absolute path", in.Dir)
	}
	timeout := DefaultTimeout
	if in.TimeoutS > 0 {
		timeout = min(time.Duration(in.TimeoutS)*time.Second, MaxTimeout)
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stdout, stderr := &capped{max: MaxStream}, &capped{max: MaxStream}
	code, err := t.sp.Exec(tctx, in.Sprite, []string{"/bin/sh", "-c", in.Command}, in.Dir, stdout, stderr)
	out := ExecOut{ExitCode: code, Stdout: stdout.String(), Stderr: stderr.String()}
	var notes []string
	switch {
	case err != nil && tctx.Err() != nil && ctx.Err() == nil:
		out.ExitCode, out.TimedOut = -1, true
		notes = append(notes, fmt.Sprintf("the command was ended after its timeout of %s (raise timeout_s, or run it in the background)", timeout))
	case err != nil:
		return nil, ExecOut{}, fail(err)
	}
	for _, c := range []struct {
		name string
		w    *capped
	}{{"stdout", stdout}, {"stderr", stderr}} {
		if c.w.cut() > 0 {
			notes = append(notes, fmt.Sprintf("%d bytes of %s were cut from the middle", c.w.cut(), c.name))
		}
	}
	out.Note = strings.Join(notes, "; ")
	return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: out.text()}}}, out, nil
}

// text is how exec's answer reads to a model.
func (o ExecOut) text() string {
	var b strings.Builder
	if o.TimedOut {
		b.WriteString("timed out\n")
	} else {
		fmt.Fprintf(&b, "exit code %d\n", o.ExitCode)
	}
	if o.Note != "" {
		fmt.Fprintf(&b, "note: %s\n", o.Note)
	}
	fmt.Fprintf(&b, "--- stdout ---\n%s", o.Stdout)
	if o.Stdout != "" && !strings.HasSuffix(o.Stdout, "\n") {
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "--- stderr ---\n%s", o.Stderr)
	return b.String()
}

type FileIn struct {
	Sprite string `json:"sprite" jsonschema:"the sprite's name"`
	Path   string `json:"path" jsonschema:"absolute path of the file in the sprite (the user's home is /home/sprite in the dev image)"`
}

type ReadOut struct {
	Content string `json:"content"`
	Size    int64  `json:"size" jsonschema:"the file's size in bytes"`
	Note    string `json:"note,omitempty"`
}

func (t *tools) readFile(ctx context.Context, _ *sdk.CallToolRequest, in FileIn) (*sdk.CallToolResult, ReadOut, error) {
	if !path.IsAbs(in.Path) {
		return nil, ReadOut{}, fmt.Errorf("path %q must be absolute", in.Path)
	}
	b, size, err := t.sp.ReadFile(ctx, in.Sprite, in.Path, MaxRead)
	if err != nil {
		return nil, ReadOut{}, fail(err)
	}
	if !utf8.Valid(b) && !(int64(len(b)) < size && utf8.Valid(trimPartialRune(b))) {
		return nil, ReadOut{}, fmt.Errorf("%s is not text (%d bytes); read it with sprite_exec, e.g. base64 or xxd", in.Path, size)
	}
	out := ReadOut{Content: string(trimPartialRune(b)), Size: size}
	if size > int64(len(b)) {
		out.Content = string(trimPartialRune(b))
		out.Note = fmt.Sprintf("only the first %d of %d bytes; read the rest with sprite_exec (tail -c +%d, sed -n)", len(out.Content), size, len(out.Content)+1)
	}
	return nil, out, nil
}

// trimPartialRune drops an incomplete UTF-8 sequence at the end of b (a
// read cut in the middle of a character).
func trimPartialRune(b []byte) []byte {
	for i := 0; i < utf8.UTFMax && i < len(b); i++ {
		if utf8.Valid(b[:len(b)-i]) {
			return b[:len(b)-i]
		}
	}
	return b
}

type WriteIn struct {
	Sprite     string `json:"sprite" jsonschema:"the sprite's name"`
	Path       string `json:"path" jsonschema:"absolute path of the file in the sprite"`
	Content    string `json:"content" jsonschema:"the whole new content of the file"`
	Executable bool   `json:"executable,omitempty" jsonschema:"make it executable (mode 0755 rather than 0644)"`
}

type WriteOut struct {
	Path  string `json:"path"`
	Bytes int    `json:"bytes"`
}

func (t *tools) writeFile(ctx context.Context, _ *sdk.CallToolRequest, in WriteIn) (*sdk.CallToolResult, WriteOut, error) {
	if !path.IsAbs(in.Path) {
		return nil, WriteOut{}, fmt.Errorf("path %q must be absolute", in.Path)
	}
	if len(in.Content) > MaxWrite {
		return nil, WriteOut{}, fmt.Errorf("content of %d bytes: at most %d per call", len(in.Content), MaxWrite)
	}
	mode := fs.FileMode(0o644)
	if in.Executable {
		mode = 0o755
	}
	if err := t.sp.WriteFile(ctx, in.Sprite, in.Path, []byte(in.Content), mode); err != nil {
		return nil, WriteOut{}, fail(err)
	}
	return nil, WriteOut{Path: in.Path, Bytes: len(in.Content)}, nil
}

type CheckpointIn struct {
	Sprite  string `json:"sprite" jsonschema:"the sprite's name"`
	Comment string `json:"comment,omitempty" jsonschema:"what state this is (e.g. 'tests pass, before the refactor')"`
}

func (t *tools) checkpoint(ctx context.Context, _ *sdk.CallToolRequest, in CheckpointIn) (*sdk.CallToolResult, Checkpoint, error) {
	return result(t.sp.Checkpoint(ctx, in.Sprite, in.Comment))
}

type RestoreIn struct {
	Sprite     string `json:"sprite" jsonschema:"the sprite's name"`
	Checkpoint string `json:"checkpoint" jsonschema:"the checkpoint's id (from sprite_checkpoint or sprite_list)"`
}

func (t *tools) restore(ctx context.Context, _ *sdk.CallToolRequest, in RestoreIn) (*sdk.CallToolResult, Sprite, error) {
	return result(t.sp.Restore(ctx, in.Sprite, in.Checkpoint))
}

type ForkIn struct {
	Sprite     string `json:"sprite" jsonschema:"the sprite to copy"`
	NewName    string `json:"new_name" jsonschema:"the new sprite's name"`
	Checkpoint string `json:"checkpoint,omitempty" jsonschema:"copy the sprite as it was at this checkpoint; default as it is now"`
}

func (t *tools) fork(ctx context.Context, _ *sdk.CallToolRequest, in ForkIn) (*sdk.CallToolResult, Sprite, error) {
	return result(t.sp.Fork(ctx, in.Sprite, in.NewName, in.Checkpoint))
}

type URLIn struct {
	Sprite string `json:"sprite" jsonschema:"the sprite's name"`
	Port   int    `json:"port,omitempty" jsonschema:"the port the web server listens on in the sprite; default the first service's, else 8080"`
	TTLS   int    `json:"ttl_s,omitempty" jsonschema:"seconds the URL's credential lasts (default 3600)"`
}

func (t *tools) url(ctx context.Context, _ *sdk.CallToolRequest, in URLIn) (*sdk.CallToolResult, URL, error) {
	ttl := time.Hour
	if in.TTLS > 0 {
		ttl = time.Duration(in.TTLS) * time.Second
	}
	return result(t.sp.URL(ctx, in.Sprite, in.Port, ttl))
}

type SpriteIn struct {
	Sprite string `json:"sprite" jsonschema:"the sprite's name"`
}

type DestroyOut struct {
	Destroyed string `json:"destroyed"`
}

func (t *tools) destroy(ctx context.Context, _ *sdk.CallToolRequest, in SpriteIn) (*sdk.CallToolResult, DestroyOut, error) {
	if err := t.sp.Destroy(ctx, in.Sprite); err != nil {
		return nil, DestroyOut{}, fail(err)
	}
	return nil, DestroyOut{Destroyed: in.Sprite}, nil
}

// capped keeps the first and the last max/2 bytes written to it and
// counts what falls between.
type capped struct {
	max   int
	head  []byte
	tail  []byte // a window over the latest bytes, at most max/2 once full
	total int64
}

func (c *capped) Write(p []byte) (int, error) {
	n := len(p)
	c.total += int64(n)
	if room := c.max/2 - len(c.head); room > 0 {
		k := min(room, len(p))
		c.head = append(c.head, p[:k]...)
		p = p[k:]
	}
	if len(p) > 0 {
		c.tail = append(c.tail, p...)
		if keep := c.max - c.max/2; len(c.tail) > 2*keep {
			c.tail = append(c.tail[:0], c.tail[len(c.tail)-keep:]...)
		}
	}
	return n, nil
}

func (c *capped) tailPart() []byte {
	if keep := c.max - c.max/2; len(c.tail) > keep {
		return c.tail[len(c.tail)-keep:]
	}
	return c.tail
}

// cut is how many bytes were dropped from the middle.
func (c *capped) cut() int64 { return c.total - int64(len(c.head)) - int64(len(c.tailPart())) }

func (c *capped) String() string {
	if c.cut() == 0 {
		return string(c.head) + string(c.tail)
	}
	return string(trimPartialRune(c.head)) + fmt.Sprintf("\n[... %d bytes cut here ...]\n", c.cut()) + strings.ToValidUTF8(string(c.tailPart()), "")
}
