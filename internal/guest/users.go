package guest

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// DefaultUser runs commands when a request names none, if it exists.
const DefaultUser = "sprite"

type user struct {
	name   string
	uid    int
	gid    int
	home   string
	shell  string
	groups []uint32
}

// lookupUser reads /etc/passwd and /etc/group (no libc in the agent),
// through etc's cache. An empty name means DefaultUser when it exists,
// else root.
func lookupUser(name string) (user, error) {
	users, groups, err := etc.load()
	if err != nil && name != "" && name != "root" {
		return user{}, err
	}
	find := func(n string) (user, bool) {
		for _, u := range users {
			if u.name == n || strconv.Itoa(u.uid) == n {
				return u, true
			}
		}
		return user{}, false
	}
	withGroups := func(u user) user {
		u.groups = slices.Clip(groups[u.name])
		if u.shell == "" {
			u.shell = "/bin/sh"
		}
		return u
	}
	if name == "" {
		if u, ok := find(DefaultUser); ok {
			return withGroups(u), nil
		}
		name = "root"
	}
	if u, ok := find(name); ok {
		return withGroups(u), nil
	}
	if name == "root" {
		return user{name: "root", home: "/root", shell: "/bin/sh"}, nil
	}
	return user{}, invalid("user %q does not exist in the sprite", name)
}

// etc is the agent's cache of the sprite's users.
var etc = etcCache{passwdPath: "/etc/passwd", groupPath: "/etc/group"}

// etcCache keeps the users of a passwd file and the supplementary groups
// of a group file parsed while neither file changes: the same file (a
// rewrite that renames a new file over it is another), size and
// modification time. Reading and parsing both for every exec cost ~0.3
// ms of its start under gVisor; two stats cost a tenth of that.
type etcCache struct {
	passwdPath, groupPath string

	mu            sync.Mutex
	passwd, group os.FileInfo // as they were when read; group nil: missing
	users         []user
	groups        map[string][]uint32 // member name -> gids, in file order
}

// load returns the users and groups, from the cache when both files are
// as they were, else read again. A group file that cannot be read means
// no supplementary groups.
func (c *etcCache) load() ([]user, map[string][]uint32, error) {
	// Stat before reading: a change in between is seen by the next load.
	pfi, perr := os.Stat(c.passwdPath)
	gfi, _ := os.Stat(c.groupPath)
	c.mu.Lock()
	if perr == nil && c.passwd != nil && sameFile(c.passwd, pfi) && sameFile(c.group, gfi) {
		users, groups := c.users, c.groups
		c.mu.Unlock()
		return users, groups, nil
	}
	c.mu.Unlock()
	users, err := readPasswd(c.passwdPath)
	groups := readGroups(c.groupPath)
	if perr == nil && err == nil {
		c.mu.Lock()
		c.passwd, c.group, c.users, c.groups = pfi, gfi, users, groups
		c.mu.Unlock()
	}
	return users, groups, err
}

// sameFile reports whether a and b (nil: missing) describe the same file
// unchanged.
func sameFile(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

func readPasswd(path string) ([]user, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []user
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), ":")
		if len(fs) < 7 {
			continue
		}
		uid, err1 := strconv.Atoi(fs[2])
		gid, err2 := strconv.Atoi(fs[3])
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, user{name: fs[0], uid: uid, gid: gid, home: fs[5], shell: fs[6]})
	}
	return out, sc.Err()
}

// readGroups maps each member named in a group file to the gids of its
// groups.
func readGroups(path string) map[string][]uint32 {
	out := map[string][]uint32{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), ":")
		if len(fs) < 4 {
			continue
		}
		gid, err := strconv.Atoi(fs[2])
		if err != nil {
			continue
		}
		for _, m := range strings.Split(fs[3], ",") {
			if m != "" {
				out[m] = append(out[m], uint32(gid))
			}
		}
	}
	return out
}

func (u user) env() []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + u.home,
		"USER=" + u.name,
		"LOGNAME=" + u.name,
		"SHELL=" + u.shell,
		"LANG=C.UTF-8",
	}
}

// lookPath resolves argv0 with the PATH in env, as the child would.
func lookPath(argv0 string, env []string) (string, error) {
	if strings.Contains(argv0, "/") {
		if err := executable(argv0); err != nil {
			return "", err
		}
		return argv0, nil
	}
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + argv0
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q: executable file not found in $PATH", argv0)
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s: permission denied", p)
	}
	return nil
}

// mergeEnv overlays extra KEY=VALUE pairs on base.
func mergeEnv(base, extra []string) []string {
	idx := map[string]int{}
	out := append([]string(nil), base...)
	for i, kv := range out {
		k, _, _ := strings.Cut(kv, "=")
		idx[k] = i
	}
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
		} else {
			idx[k] = len(out)
			out = append(out, kv)
		}
	}
	return out
}
