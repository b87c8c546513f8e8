package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/client"
)

// A sprite is created, runs a command and is destroyed. FromEnv reads
// WISP_HOST and WISP_TOKEN, else WISP_SOCKET.
func Example() {
	ctx := context.Background()
	c := client.New(client.FromEnv())
	if _, err := c.Create(ctx, api.CreateRequest{Name: "example"}); err != nil {
		log.Fatal(err)
	}
	sp := c.Sprite("example")
	defer sp.Destroy(ctx)

	out, err := sp.Command("uname", "-s").Output()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(out))
	// Output: Linux
}

// Command works as os/exec does: stdin in, stdout and stderr out, the
// exit code in an *ExitError.
func ExampleSprite_Command() {
	ctx := context.Background()
	c := client.New(client.FromEnv())
	if _, err := c.Create(ctx, api.CreateRequest{Name: "example-cmd"}); err != nil {
		log.Fatal(err)
	}
	sp := c.Sprite("example-cmd")
	defer sp.Destroy(ctx)

	cmd := sp.Command("sh", "-c", "tr a-z A-Z; exit 3")
	cmd.Stdin = strings.NewReader("hello from the host\n")
	out, err := cmd.Output()
	fmt.Print(string(out))
	var ee *client.ExitError
	if errors.As(err, &ee) {
		fmt.Println("exit code", ee.Code)
	}
	// Output:
	// HELLO FROM THE HOST
	// exit code 3
}

// Files go in and out over HTTP; a missing one is client.ErrNotFound.
func ExampleSprite_WriteFile() {
	ctx := context.Background()
	c := client.New(client.FromEnv())
	if _, err := c.Create(ctx, api.CreateRequest{Name: "example-files"}); err != nil {
		log.Fatal(err)
	}
	sp := c.Sprite("example-files")
	defer sp.Destroy(ctx)

	if err := sp.WriteFile(ctx, "/home/sprite/notes.txt", []byte("remember the milk\n"), 0o600); err != nil {
		log.Fatal(err)
	}
	b, err := sp.ReadFile(ctx, "/home/sprite/notes.txt")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(b))
	_, err = sp.ReadFile(ctx, "/home/sprite/nothing-here")
	fmt.Println("missing file is ErrNotFound:", errors.Is(err, client.ErrNotFound))
	// Output:
	// remember the milk
	// missing file is ErrNotFound: true
}

// A checkpoint saves the sprite's disk; Restore puts it back, and Fork
// makes a new sprite from it.
func ExampleSprite_Checkpoint() {
	ctx := context.Background()
	c := client.New(client.FromEnv())
	if _, err := c.Create(ctx, api.CreateRequest{Name: "example-ck"}); err != nil {
		log.Fatal(err)
	}
	sp := c.Sprite("example-ck")
	defer sp.Destroy(ctx)

	sp.WriteFile(ctx, "/home/sprite/state", []byte("good\n"), 0)
	ck, err := sp.Checkpoint(ctx, api.CheckpointRequest{Comment: "known good"})
	if err != nil {
		log.Fatal(err)
	}
	sp.WriteFile(ctx, "/home/sprite/state", []byte("broken\n"), 0)
	if _, err := sp.Restore(ctx, ck.ID); err != nil {
		log.Fatal(err)
	}
	b, _ := sp.ReadFile(ctx, "/home/sprite/state")
	fmt.Print("after restore: ", string(b))

	if _, err := sp.Fork(ctx, "example-ck-fork", ck.ID); err != nil {
		log.Fatal(err)
	}
	fork := c.Sprite("example-ck-fork")
	defer fork.Destroy(ctx)
	b, _ = fork.ReadFile(ctx, "/home/sprite/state")
	fmt.Print("in the fork: ", string(b))
	// Output:
	// after restore: good
	// in the fork: good
}
