package e2b

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/e2b/envd/process"
	"github.com/wisp-sh/wisp/internal/sprite"
)

// The SDKs run every command as `/bin/bash -l -c CMD`: a login shell,
// which reads /etc/profile and ~/.profile first. Under gVisor that costs
// ~40 ms a command (Debian's /etc/profile forks `id -u`), three times
// the rest of a round trip. What a login shell's profile makes of an
// environment depends on the profile files and the environment only, so
// the daemon runs it once (`bash -l -c 'env -0'`), keeps the result for
// that user, environment and those files' modification times, and runs
// later commands as `/bin/bash -c CMD` in it. A changed profile file is a
// new key (its time or size changed): the next command reads it again.
// What differs from a real login shell: `shopt login_shell` is off, and
// functions a profile defines without exporting them are not there.

// loginFiles are what a login shell reads (~ is the user's home), and
// what its result is keyed by besides the environment (see loginStamps).
var loginFiles = []string{"/etc/profile", "/etc/profile.d/*", "~/.bash_profile", "~/.bash_login", "~/.profile", "~/.bashrc"}

// maxLogins bounds the environments kept per sandbox.
const maxLogins = 16

// loginCommand returns CMD of the SDKs' `/bin/bash -l -c CMD`.
func loginCommand(cfg *process.ProcessConfig) (string, bool) {
	a := cfg.GetArgs()
	if cfg.GetCmd() != "/bin/bash" || len(a) != 3 || a[0] != "-l" || a[1] != "-c" {
		return "", false
	}
	return a[2], true
}

// loginEnv returns the environment a login shell of user makes of env,
// from the cache or by running one; ok is false when it cannot tell (the
// caller then runs the login shell itself).
func (h *Handler) loginEnv(ctx context.Context, ag *agent.Client, user string, env []string) ([]string, bool) {
	name := user
	if name == "" {
		name = "root"
	}
	home, err := h.home(ctx, ag, name)
	if err != nil {
		return nil, false
	}
	stamps, paths, ok := loginStamps(ctx, ag, home)
	if !ok {
		return nil, false
	}
	key := loginKey(user, env, stamps)
	l := h.liveOf(reqOf(ctx).sb.ID)
	l.mu.Lock()
	if paths != nil {
		l.stamps[user] = stamped{ag: ag, paths: paths, stamp: stamps}
	}
	got, ok := l.logins[key]
	l.mu.Unlock()
	if ok {
		return got, true
	}
	// Concurrent misses (the first commands of a sandbox, a warm-up
	// racing its first command) run one login shell.
	v, err, _ := h.logins.Do(reqOf(ctx).sb.ID+"\x00"+key, func() (any, error) {
		var out bytes.Buffer
		exit, err := ag.Exec(ctx, proto.ExecRequest{Argv: []string{"/bin/bash", "-l", "-c", "env -0"}, Env: env, User: user, Dir: home},
			agent.ExecIO{Stdout: &limitedWriter{w: &out, n: 1 << 20}})
		if err == nil && exit.Code != 0 {
			err = fmt.Errorf("bash -l: exit %d %s", exit.Code, exit.Error)
		}
		return out.String(), err
	})
	if err != nil {
		return nil, false
	}
	out := v.(string)
	var login []string
	for _, kv := range strings.Split(out, "\x00") {
		k, _, ok := strings.Cut(kv, "=")
		switch {
		case !ok, k == "_", k == "SHLVL", k == "PWD", k == "OLDPWD":
			// bash's own, set afresh by the command's shell
		default:
			login = append(login, kv)
		}
	}
	l.mu.Lock()
	if len(l.logins) >= maxLogins {
		clear(l.logins)
	}
	l.logins[key] = login
	l.mu.Unlock()
	return login, true
}

func loginKey(user string, env []string, stamps string) string {
	return user + "\x00" + strings.Join(env, "\x00") + "\x00\x00" + stamps
}

// stamped is the stamp of a user's login files the guest last gave
// (proto.OpStats), with the paths it describes.
type stamped struct {
	ag    *agent.Client // the agent that gave it (one that knows OpStats)
	paths []string
	stamp string
}

// cachedLogin returns the login environment kept for user and env under
// the login files' last stamp, without asking the guest, and the
// precondition to start the command under (proto.SessionRequest.Expect):
// the guest checks that the files still have that stamp as it starts the
// command, which saves a round trip to the guest per command. ok is false
// when there is none (then loginEnv asks).
func (h *Handler) cachedLogin(ctx context.Context, ag *agent.Client, user string, env []string) (login []string, expect *proto.Expect, ok bool) {
	l := h.liveOf(reqOf(ctx).sb.ID)
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.stamps[user]
	if !ok || st.ag != ag {
		return nil, nil, false
	}
	login, ok = l.logins[loginKey(user, env, st.stamp)]
	if !ok {
		return nil, nil, false
	}
	return login, &proto.Expect{Paths: st.paths, Stamp: st.stamp}, true
}

// warmLogin computes the login environment of a new sandbox's default
// user in the background, so that its first command finds it.
func (h *Handler) warmLogin(sb Sandbox) {
	ctx, cancel := context.WithTimeout(context.WithValue(h.closing, reqKey{}, envdReq{sb: sb, user: sb.User}), time.Minute)
	defer cancel()
	ag, release, err := h.opt.Sprites.Agent(ctx, sb.ID)
	if err != nil {
		return
	}
	defer release()
	env, err := h.opt.Sprites.ExecEnv(sb.ID)
	if err != nil {
		return
	}
	h.loginEnv(ctx, ag, sb.User, sprite.MergeEnv(env, []string{}))
}

// loginStamps describes the login files of a user whose home is home: the
// time and size of each (or that it is missing). It asks in one call
// (proto.OpStats; then paths is what it asked, and stamps is
// proto.StatsStamp of the answer), or in three from a guest older than
// that op (paths nil).
func loginStamps(ctx context.Context, ag *agent.Client, home string) (stamps string, paths []string, ok bool) {
	paths = make([]string, 0, len(loginFiles))
	for _, f := range loginFiles {
		if rest, ok := strings.CutPrefix(f, "~/"); ok {
			f = path.Join(home, rest)
		}
		paths = append(paths, f)
	}
	files, truncated, err := ag.Stats(ctx, paths)
	var ge *agent.GuestError
	if errors.As(err, &ge) && ge.Kind == proto.KindInvalid {
		stamps, ok := loginStampsOld(ctx, ag, home)
		return stamps, nil, ok
	}
	if err != nil || truncated {
		return "", nil, false
	}
	return proto.StatsStamp(files), paths, true
}

// loginStampsOld is loginStamps in three calls: /etc/profile, the folder
// /etc/profile.d and the home folder (a listing has every entry's time
// and size).
func loginStampsOld(ctx context.Context, ag *agent.Client, home string) (string, bool) {
	var (
		wg               sync.WaitGroup
		profile          proto.FileInfo
		dotd, homeFiles  []proto.FileInfo
		errP, errD, errH error
	)
	wg.Go(func() { profile, errP = ag.Stat(ctx, "/etc/profile") })
	wg.Go(func() { dotd, _, errD = ag.List(ctx, "/etc/profile.d") })
	wg.Go(func() { homeFiles, _, errH = ag.List(ctx, home) })
	wg.Wait()
	var b strings.Builder
	stamp := func(name string, fi proto.FileInfo, err error) bool {
		switch {
		case err == nil:
			fmt.Fprintf(&b, "%s=%s/%d;", name, fi.ModTime.Format(time.RFC3339Nano), fi.Size)
		case isNotFound(err):
			fmt.Fprintf(&b, "%s=-;", name)
		default:
			return false
		}
		return true
	}
	if !stamp("/etc/profile", profile, errP) {
		return "", false
	}
	if errD != nil && !isNotFound(errD) || errH != nil && !isNotFound(errH) {
		return "", false
	}
	for _, f := range dotd {
		stamp("/etc/profile.d/"+f.Name, f, nil)
	}
	for _, f := range homeFiles {
		switch f.Name {
		case ".bash_profile", ".bash_login", ".profile", ".bashrc":
			stamp("~/"+f.Name, f, nil)
		}
	}
	return b.String(), true
}
