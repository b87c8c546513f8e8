package guest

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
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

// lookupUser reads /etc/passwd and /etc/group (no libc in the agent). An
// empty name means DefaultUser when it exists, else root.
func lookupUser(name string) (user, error) {
	users, err := readPasswd("/etc/passwd")
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

func withGroups(u user) user {
	f, err := os.Open("/etc/group")
	if err != nil {
		return u
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), ":")
		if len(fs) < 4 {
			continue
		}
		for _, m := range strings.Split(fs[3], ",") {
			if m == u.name {
				if gid, err := strconv.Atoi(fs[2]); err == nil {
					u.groups = append(u.groups, uint32(gid))
				}
			}
		}
	}
	if u.shell == "" {
		u.shell = "/bin/sh"
	}
	return u
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
