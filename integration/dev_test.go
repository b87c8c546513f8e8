package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/image/imagetest"
)

// defaultBackend is what auto picks here: gVisor where runsc is installed.
func defaultBackend() string { return backends()[len(backends())-1] }

type imageJSON struct {
	Name     string            `json:"name"`
	Built    bool              `json:"built"`
	Path     string            `json:"path"`
	Contents map[string]string `json:"contents"`
	Recipe   *struct {
		From string   `json:"from"`
		Run  []string `json:"run"`
		Copy []string `json:"copy"`
	} `json:"recipe"`
}

func (d *daemon) imageMap() map[string]imageJSON {
	d.t.Helper()
	var l []imageJSON
	if err := json.Unmarshal([]byte(d.ok("image", "list", "--json")), &l); err != nil {
		d.t.Fatal(err)
	}
	m := map[string]imageJSON{}
	for _, im := range l {
		m[im.Name] = im
	}
	return m
}

func poolFree(t *testing.T, d *daemon) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Join(d.dir, "data", "pool"), &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// TestDefaultLayout runs wispd as a user would, with no layout flags: it
// builds the dev image (debootstrap, which the nodev storage pool refuses,
// runs in the build dir), keeps it in the pool, and a sprite created from
// it is a reflink of it (the pool does not lose the image's size) with
// Claude Code, the toolchains and a working sudo.
func TestDefaultLayout(t *testing.T) {
	d := newDefaultDaemon(t, defaultBackend())
	t0 := time.Now()
	_, errOut, code := d.wisp(nil, "image", "build", "dev")
	if code != 0 {
		t.Fatalf("image build dev: exit %d\n%s", code, errOut)
	}
	t.Logf("built dev in the default layout in %s", time.Since(t0).Round(time.Second))
	for _, want := range []string{"[1/9] debootstrap", "[2/9] apt-get install", "Claude Code", "[9/9] publish"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("build progress lacks %q:\n%s", want, errOut)
		}
	}
	dev := d.imageMap()["dev"]
	if !dev.Built || !strings.HasPrefix(dev.Path, filepath.Join(d.dir, "data", "pool")+"/") {
		t.Fatalf("dev image not built into the pool: %+v", dev)
	}
	for _, k := range []string{"claude", "node", "npm", "go", "python3", "git", "gh", "ripgrep", "jq", "tmux", "sqlite3"} {
		if dev.Contents[k] == "" {
			t.Errorf("image list does not say which %s dev holds: %v", k, dev.Contents)
		}
	}
	if out := d.ok("image", "list"); !strings.Contains(out, "claude "+dev.Contents["claude"]) {
		t.Errorf("image list does not show the versions:\n%s", out)
	}
	if ents, _ := os.ReadDir(filepath.Join(d.dir, "data", "build")); len(ents) != 0 {
		t.Errorf("the build dir keeps %d entries after a build", len(ents))
	}

	// The default image is dev; its disk is a reflink of the image: the
	// pool loses far less than the image's 1.5 GB of data.
	free := poolFree(t, d)
	t0 = time.Now()
	d.ok("create", "a", "--idle", "never")
	d.ok("exec", "a", "--", "true")
	t.Logf("create to first exec from dev: %s", time.Since(t0).Round(time.Millisecond))
	if used := free - poolFree(t, d); used > 200<<20 {
		t.Errorf("creating a sprite from dev took %d MiB of the pool: a copy, not a reflink", used>>20)
	}
	if s := d.info("a"); s.DiskGiB != 10 {
		t.Errorf("default disk %d GiB, want 10", s.DiskGiB)
	}
	checkDevSprite(t, d, "a")
}

// checkDevSprite checks what an agent needs from a dev sprite: the tools on
// the sprite user's PATH, and sudo.
func checkDevSprite(t *testing.T, d *daemon, name string) {
	t.Helper()
	out := d.ok("exec", name, "--", "sh", "-c", "whoami; claude --version; node --version; npm --version; go version; python3 --version; gh --version | head -1; rg --version | head -1; jq --version; tmux -V; sqlite3 --version | cut -c1-6; git --version; make --version | head -1; gcc --version | head -1; ssh -V 2>&1")
	for _, want := range []string{"sprite\n", "(Claude Code)", "v22.", "go version go1.", "Python 3.11", "gh version", "ripgrep", "jq-", "tmux", "git version", "GNU Make", "gcc", "OpenSSH"} {
		if !strings.Contains(out, want) {
			t.Errorf("dev sprite: %q missing from:\n%s", want, out)
		}
	}
	// A Python venv, as an agent makes one (with pip in it where the CPU is
	// not emulated: ensurepip under TCG takes minutes).
	venv := "python3 -m venv /tmp/venv && /tmp/venv/bin/pip --version"
	if d.backend == "qemu" {
		venv = "python3 -m venv --without-pip /tmp/venv && /tmp/venv/bin/python -c 'import sys; assert sys.prefix == \"/tmp/venv\"' && python3 -m pip --version"
	}
	d.ok("exec", name, "--", "sh", "-c", venv)
	// The locale: C.UTF-8 as before, its data now read from the locale
	// archive (one file to map instead of twelve), and listed once.
	out = d.ok("exec", name, "--", "sh", "-c", `echo "$LANG"; locale charmap; printf '\303\251' | wc -m; locale -a; localedef --list-archive`)
	if want := "C.UTF-8\nUTF-8\n1\nC\nC.utf8\nPOSIX\nC.utf8\n"; out != want {
		t.Errorf("dev sprite's locale:\n%s\nwant:\n%s", out, want)
	}
	// sudo: passwordless for sprite, and root's powers with it.
	if out := d.ok("exec", name, "--", "sudo", "-n", "id", "-u"); out != "0\n" {
		t.Errorf("sudo -n id -u: %q", out)
	}
	d.ok("exec", name, "--", "sudo", "-n", "true")
	if _, _, code := d.wisp(nil, "exec", name, "--", "apt-get", "clean"); code == 0 {
		t.Errorf("apt-get clean succeeded as sprite without sudo: the check below proves nothing")
	}
	d.ok("exec", name, "--", "sudo", "-n", "apt-get", "clean")
	d.ok("exec", name, "--", "sudo", "-n", "sh", "-c", "echo ok > /etc/wisp-sudo && dpkg --configure -a")
}

// TestDevImage: on each backend, a sprite of the dev image (shared test
// cache, imported into the pool once) has the tools and sudo; environment
// and secrets reach every exec and console and never the record or log.
func TestDevImage(t *testing.T) {
	imagetest.NeedDev(t)
	for _, b := range backends() {
		t.Run(b, func(t *testing.T) {
			d := startDaemon(t, &daemon{backend: b, pool: 12})
			secret := "sk-ant-test-" + strings.Repeat("7", 20)
			d.ok("create", "dev", "--image", "dev", "--disk", "4", "--idle", "never", "--env", "FOO=bar baz", "--env", "TZ=UTC")
			checkDevSprite(t, d, "dev")
			testEnvSecrets(t, d, "dev", secret)
		})
	}
}

func testEnvSecrets(t *testing.T, d *daemon, name, secret string) {
	t.Helper()
	// Bad input changes nothing.
	d.fails("invalid variable name", "secret", "set", name, "1BAD")
	d.fails("not found", "secret", "set", "ghost", "KEY")
	d.fails("want KEY=VALUE", "create", "x", "--env", "NOEQUALS")
	if out := d.ok("secret", "list", name); out != "" {
		t.Errorf("secrets after bad input: %q", out)
	}
	if _, _, code := d.wisp([]byte(secret+"\n"), "secret", "set", name, "ANTHROPIC_API_KEY"); code != 0 {
		t.Fatal("secret set failed")
	}
	f := filepath.Join(d.dir, "tok")
	os.WriteFile(f, []byte("gh-token\n"), 0o600)
	d.ok("secret", "set", name, "GH_TOKEN", "--file", f)
	if out := d.ok("secret", "list", name); out != "ANTHROPIC_API_KEY\nGH_TOKEN\n" {
		t.Errorf("secret list: %q", out)
	}
	want := "bar baz|UTC|" + secret + "|gh-token\n"
	if out := d.ok("exec", name, "--", "sh", "-c", `echo "$FOO|$TZ|$ANTHROPIC_API_KEY|$GH_TOKEN"`); out != want {
		t.Errorf("exec env: %q, want %q", out, want)
	}
	// The exec's own --env wins over the sprite's.
	if out := d.ok("exec", name, "--env", "FOO=mine", "--", "sh", "-c", `echo "$FOO"`); out != "mine\n" {
		t.Errorf("exec --env over sprite env: %q", out)
	}
	out, _, _ := d.wisp([]byte("echo \"C:$FOO:$ANTHROPIC_API_KEY\"\nexit\n"), "console", name)
	if !strings.Contains(out, "C:bar baz:"+secret) {
		t.Errorf("console env: %q", out)
	}
	// Never in the record, the API's answers or the log; the file is 0600.
	for _, args := range [][]string{{"info", name, "--json"}, {"list", "--json"}, {"secret", "list", name, "--json"}} {
		if out := d.ok(args...); strings.Contains(out, secret) {
			t.Errorf("wisp %v shows the secret", args)
		}
	}
	if log, _ := os.ReadFile(d.logf.Name()); strings.Contains(string(log), secret) {
		t.Errorf("the daemon's log holds the secret")
	}
	if info := d.ok("info", name, "--json"); !strings.Contains(info, "FOO=bar baz") {
		t.Errorf("info does not show the sprite's env: %s", info)
	}
	files, _ := filepath.Glob(filepath.Join(d.dir, "data", "pool", "sprites", "*", "secrets.json"))
	if len(files) != 1 {
		t.Fatalf("secrets files: %v", files)
	}
	if fi, err := os.Stat(files[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secrets file mode: %v %v", fi.Mode(), err)
	}
	// Secrets survive a restart of the sprite; rm takes one away.
	d.ok("stop", name)
	d.ok("start", name)
	d.ok("secret", "rm", name, "GH_TOKEN")
	d.fails("no secret", "secret", "rm", name, "GH_TOKEN")
	if out := d.ok("exec", name, "--", "sh", "-c", `echo "$ANTHROPIC_API_KEY|${GH_TOKEN-unset}"`); out != secret+"|unset\n" {
		t.Errorf("after rm: %q", out)
	}
}

// TestOwnImages: an image built from dev by a recipe, one saved from a
// sprite, creates from both, the recipe shown, a failing recipe leaving
// nothing, rm.
func TestOwnImages(t *testing.T) {
	imagetest.NeedDev(t)
	d := startDaemon(t, &daemon{backend: defaultBackend(), pool: 12, args: []string{"--default-disk", "4"}})
	local := filepath.Join(d.dir, "payload")
	os.MkdirAll(local, 0o755)
	os.WriteFile(filepath.Join(local, "hello.txt"), []byte("from the host\n"), 0o644)

	d.fails("need --from", "image", "build", "mine", "--run", "true")
	d.fails("want LOCAL:/absolute/path", "image", "build", "mine", "--from", "dev", "--copy", "nocolon")
	d.fails("is built in", "image", "save", "nobody", "dev")
	d.fails("invalid image name", "image", "build", "Bad_Name", "--from", "dev")

	// A failing step: no image, no sprite left.
	_, errOut, code := d.wisp(nil, "image", "build", "broken", "--from", "dev", "--run", "echo step-one", "--run", "exit 7")
	if code == 0 || !strings.Contains(errOut, "exit 7") || !strings.Contains(errOut, "step-one") {
		t.Errorf("failing recipe: exit %d\n%s", code, errOut)
	}
	if _, ok := d.imageMap()["broken"]; ok {
		t.Errorf("a failed build left an image")
	}
	if l := d.list(); len(l) != 0 {
		t.Errorf("a failed build left sprites: %+v", l)
	}

	d.ok("image", "build", "mine", "--from", "dev", "--copy", local+":/opt/payload",
		"--run", "echo built-by-recipe > /etc/mine && id -u > /etc/mine-uid", "--run", "apt-get clean")
	if l := d.list(); len(l) != 0 {
		t.Errorf("the build's throwaway sprite remains: %+v", l)
	}
	mine := d.imageMap()["mine"]
	if !mine.Built || mine.Recipe == nil || mine.Recipe.From != "dev" || len(mine.Recipe.Run) != 2 || len(mine.Recipe.Copy) != 1 || mine.Contents["claude"] == "" {
		t.Errorf("image mine: %+v", mine)
	}
	if out := d.ok("image", "info", "mine"); !strings.Contains(out, "apt-get clean") || !strings.Contains(out, "/opt/payload") {
		t.Errorf("image info does not show the recipe:\n%s", out)
	}
	d.ok("create", "m1", "--image", "mine", "--idle", "never")
	if out := d.ok("exec", "m1", "--", "sh", "-c", "cat /etc/mine /etc/mine-uid /opt/payload/hello.txt; claude --version"); !strings.Contains(out, "built-by-recipe\n0\nfrom the host\n") || !strings.Contains(out, "Claude Code") {
		t.Errorf("sprite of mine: %q", out)
	}

	// Save a running sprite's disk as an image.
	d.ok("exec", "m1", "--", "sh", "-c", "echo state-of-m1 > /home/sprite/note && sync")
	d.ok("image", "save", "m1", "snap")
	d.ok("create", "s1", "--image", "snap", "--idle", "never")
	if out := d.ok("exec", "s1", "--", "cat", "/home/sprite/note"); out != "state-of-m1\n" {
		t.Errorf("sprite of the saved image: %q", out)
	}
	if out := d.ok("image", "info", "snap"); !strings.Contains(out, "m1") {
		t.Errorf("image info snap does not say where it came from:\n%s", out)
	}

	d.ok("image", "rm", "mine")
	d.fails("unknown image", "create", "m2", "--image", "mine")
	d.fails("unknown image", "image", "rm", "mine")
	d.fails("built in", "image", "rm", "dev")
	// Sprites of a removed image keep their disks.
	if out := d.ok("exec", "m1", "--", "cat", "/etc/mine"); out != "built-by-recipe\n" {
		t.Errorf("sprite of a removed image: %q", out)
	}
}
