// commands.run: output, exit codes, env, cwd, user, background and kill,
// stdin, a 10 MB output.
import { Sandbox, CommandExitError } from 'e2b'
import { assert, step } from './lib.mjs'

const sbx = await Sandbox.create()
try {
  await step('stdout and stderr', async () => {
    const r = await sbx.commands.run('echo out; echo err >&2')
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'out\n')
    assert.equal(r.stderr, 'err\n')
  })
  await step('exit code with the SDK error', async () => {
    const err = await sbx.commands.run('echo partial; echo bad >&2; exit 3').catch(e => e)
    assert.ok(err instanceof CommandExitError, `got ${err}`)
    assert.equal(err.exitCode, 3)
    assert.equal(err.stdout, 'partial\n')
    assert.equal(err.stderr, 'bad\n')
  })
  await step('env and cwd', async () => {
    const r = await sbx.commands.run('echo "$FOO $BAR"; pwd', { envs: { FOO: 'foo', BAR: 'b a r' }, cwd: '/tmp' })
    assert.equal(r.stdout, 'foo b a r\n/tmp\n')
    const rel = await sbx.commands.run('mkdir -p sub && cd sub && pwd')
    assert.equal(rel.stdout, '/home/user/sub\n')
    const r2 = await sbx.commands.run('pwd', { cwd: 'sub' })
    assert.equal(r2.stdout, '/home/user/sub\n')
  })
  await step('users: user by default, root when named, passwordless sudo', async () => {
    assert.equal((await sbx.commands.run('whoami; echo $HOME')).stdout, 'user\n/home/user\n')
    assert.equal((await sbx.commands.run('whoami; echo $HOME', { user: 'root' })).stdout, 'root\n/root\n')
    assert.equal((await sbx.commands.run('sudo -n whoami')).stdout, 'root\n')
    assert.match((await sbx.commands.run('python3 -c "print(6*7)"')).stdout, /^42\n$/)
  })
  await step('login shell: the profile is read, and again when it changes', async () => {
    assert.equal((await sbx.commands.run('echo $PATH')).stdout, '/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games\n')
    await sbx.commands.run('echo "export FROM_PROFILE=one" >> ~/.profile')
    assert.equal((await sbx.commands.run('echo $FROM_PROFILE')).stdout, 'one\n')
    await sbx.commands.run('sed -i s/=one/=two/ ~/.profile')
    assert.equal((await sbx.commands.run('echo $FROM_PROFILE')).stdout, 'two\n')
    assert.equal((await sbx.commands.run('echo $FROM_PROFILE', { envs: { FROM_PROFILE: 'env' } })).stdout, 'two\n') // the profile wins, as in bash -l
  })
  await step('streaming callbacks', async () => {
    const seen = []
    await sbx.commands.run('for i in 1 2 3; do echo $i; sleep 0.05; done', { onStdout: d => seen.push(d) })
    assert.equal(seen.join(''), '1\n2\n3\n')
  })
  await step('background, list and kill', async () => {
    const h = await sbx.commands.run('sleep 600', { background: true })
    assert.ok(h.pid > 0)
    const procs = await sbx.commands.list()
    assert.ok(procs.some(p => p.pid === h.pid && p.args.includes('sleep 600')), JSON.stringify(procs))
    assert.equal(await sbx.commands.kill(h.pid), true)
    const err = await h.wait().catch(e => e)
    assert.ok(err instanceof CommandExitError, `got ${err}`)
    assert.equal(err.exitCode, -1)
    assert.equal(await sbx.commands.kill(h.pid), false)
  })
  await step('connect to a running command', async () => {
    const h = await sbx.commands.run('sleep 1; echo late', { background: true })
    await h.disconnect()
    const again = await sbx.commands.connect(h.pid)
    const r = await again.wait()
    assert.equal(r.stdout, 'late\n')
  })
  await step('stdin', async () => {
    const h = await sbx.commands.run('cat; echo done', { background: true, stdin: true })
    await sbx.commands.sendStdin(h.pid, 'hello ')
    await h.sendStdin('stdin\n')
    await h.closeStdin()
    const r = await h.wait()
    assert.equal(r.stdout, 'hello stdin\ndone\n')
  })
  await step('a 10 MB output', async () => {
    const r = await sbx.commands.run('head -c 10000000 /dev/zero | tr "\\0" x')
    assert.equal(r.stdout.length, 10_000_000)
    assert.ok(/^x+$/.test(r.stdout))
  })
} finally {
  await sbx.kill()
}
