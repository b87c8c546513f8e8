// Timeouts: expiry kills; with autoPause the sandbox sleeps, and connect
// wakes it with its files and processes intact.
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
  const bg = await sbx.commands.run('while sleep 0.2; do :; done', { background: true, stdin: true })
  await sbx.setTimeout(2_000)
  await until('the sandbox to pause', 60_000, async () => (await sbx.getInfo()).state === 'paused')
  const listed = await Sandbox.list({ query: { state: ['paused'] } }).nextItems()
  assert.ok(listed.some(s => s.sandboxId === sbx.sandboxId))
  assert.equal(await sbx.isRunning(), false)
  const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 60_000 })
  assert.equal((await again.getInfo()).state, 'running')
  assert.equal(await again.files.read('keep.txt'), 'kept across pause')
  assert.equal((await again.commands.run('cat keep.txt')).stdout, 'kept across pause')
  const procs = await again.commands.list()
  assert.ok(procs.some(p => p.pid === bg.pid), `the background command is not listed after the resume: ${JSON.stringify(procs)}`)
  assert.match((await again.commands.run('pgrep -f "while sleep" || true')).stdout, /^\d+\n/, 'the background command slept and woke with the sandbox')
  const h = await again.commands.connect(bg.pid)
  await again.commands.sendStdin(bg.pid, 'ignored\n') // attaches again
  assert.equal(await again.commands.kill(bg.pid), true)
  const err = await h.wait().catch(e => e)
  assert.equal(err.exitCode, -1)
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
