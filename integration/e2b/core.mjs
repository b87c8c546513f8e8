// The core of the E2B SDK, for a slower backend: create, run, files, kill.
import { Sandbox, CommandExitError } from 'e2b'
import { assert, step } from './lib.mjs'

const sbx = await Sandbox.create({ metadata: { core: '1' } })
try {
  await step('commands.run', async () => {
    const r = await sbx.commands.run('whoami; echo err >&2')
    assert.equal(r.stdout, 'user\n')
    assert.equal(r.stderr, 'err\n')
    const err = await sbx.commands.run('exit 7').catch(e => e)
    assert.ok(err instanceof CommandExitError)
    assert.equal(err.exitCode, 7)
  })
  await step('files', async () => {
    await sbx.files.write('dir/core.txt', 'core')
    assert.equal(await sbx.files.read('/home/user/dir/core.txt'), 'core')
    assert.deepEqual((await sbx.files.list('dir')).map(e => e.name), ['core.txt'])
  })
  await step('list and info', async () => {
    const items = await Sandbox.list({ query: { metadata: { core: '1' } } }).nextItems()
    assert.deepEqual(items.map(s => s.sandboxId), [sbx.sandboxId])
    assert.equal((await sbx.getInfo()).state, 'running')
  })
} finally {
  await step('kill', async () => assert.equal(await sbx.kill(), true))
}
