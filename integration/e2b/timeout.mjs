// Timeouts: expiry kills; with autoPause the sandbox sleeps, and connect
// wakes it with its files intact. (Processes started through envd end at
// a pause: they are tied to the exec streams of the guest agent, which a
// sleep cuts; see the README.)
import { Sandbox, NotFoundError } from 'e2b'
import { assert, step, until } from './lib.mjs'

await step('setTimeout expiry kills', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 60_000 })
  await sbx.setTimeout(2_000)
  const info = await sbx.getInfo()
  assert.ok(info.endAt.getTime() - Date.now() < 5_000, `endAt ${info.endAt.toISOString()}`)
  await until('the sandbox to be killed', 30_000, async () => {
    try { await Sandbox.getInfo(sbx.sandboxId); return false } catch (e) { if (e instanceof NotFoundError) return true; throw e }
  })
  assert.equal(await sbx.isRunning(), false)
})

await step('autoPause sleeps, connect wakes with files intact', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 60_000, lifecycle: { onTimeout: 'pause' } })
  await sbx.files.write('keep.txt', 'kept across pause')
  await sbx.setTimeout(2_000)
  await until('the sandbox to pause', 60_000, async () => (await sbx.getInfo()).state === 'paused')
  const listed = await Sandbox.list({ query: { state: ['paused'] } }).nextItems()
  assert.ok(listed.some(s => s.sandboxId === sbx.sandboxId))
  assert.equal(await sbx.isRunning(), false)
  const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 60_000 })
  assert.equal((await again.getInfo()).state, 'running')
  assert.equal(await again.files.read('keep.txt'), 'kept across pause')
  assert.equal((await again.commands.run('cat keep.txt')).stdout, 'kept across pause')
  await again.kill()
})

await step('pause and connect', async () => {
  const sbx = await Sandbox.create()
  await sbx.files.write('p.txt', 'paused')
  assert.equal(await sbx.pause(), true)
  assert.equal(await Sandbox.pause(sbx.sandboxId), false) // already paused
  await sbx.connect()
  assert.equal(await sbx.files.read('p.txt'), 'paused')
  await sbx.kill()
})
