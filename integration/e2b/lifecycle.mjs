// Create with metadata, list with a metadata filter, info, kill.
import { Sandbox, NotFoundError } from 'e2b'
import { assert, step } from './lib.mjs'

const run = `r${Date.now()}`
let a, b
await step('create two sandboxes, one with metadata', async () => {
  ;[a, b] = await Promise.all([
    Sandbox.create({ metadata: { suite: run, role: 'a' }, envs: { GREETING: 'hi from create' } }),
    Sandbox.create(),
  ])
  assert.match(a.sandboxId, /^[a-z][a-z0-9]{19}$/)
})
await step('list filters by metadata', async () => {
  const items = await Sandbox.list({ query: { metadata: { suite: run } } }).nextItems()
  assert.deepEqual(items.map(s => s.sandboxId), [a.sandboxId])
  assert.equal(items[0].metadata.role, 'a')
  assert.equal(items[0].state, 'running')
  const all = await Sandbox.list().nextItems()
  assert.ok(all.some(s => s.sandboxId === b.sandboxId))
})
await step('list pages with limit and nextToken', async () => {
  const p = Sandbox.list({ limit: 1 })
  const first = await p.nextItems()
  assert.equal(first.length, 1)
  assert.ok(p.hasNext)
  const second = await p.nextItems()
  assert.equal(second.length, 1)
  assert.notEqual(first[0].sandboxId, second[0].sandboxId)
})
await step('info', async () => {
  const info = await a.getInfo()
  assert.equal(info.sandboxId, a.sandboxId)
  assert.equal(info.templateId, 'base')
  assert.equal(info.metadata.suite, run)
  assert.ok(info.endAt > info.startedAt)
  assert.equal(await a.isRunning(), true)
})
await step('envs given at create reach commands', async () => {
  const r = await a.commands.run('echo $GREETING')
  assert.equal(r.stdout, 'hi from create\n')
})
await step('fork: the children have the parent\'s files', async () => {
  await a.files.write('forked.txt', 'from the parent')
  const forks = await a.fork({ count: 2, timeoutMs: 120_000 })
  assert.equal(forks.length, 2)
  for (const f of forks) {
    assert.ok(f instanceof Sandbox, `fork failed: ${f}`)
    assert.notEqual(f.sandboxId, a.sandboxId)
    assert.equal(await f.files.read('forked.txt'), 'from the parent')
    assert.equal((await f.commands.run('whoami; echo $GREETING')).stdout, 'user\nhi from create\n')
    assert.equal((await f.getInfo()).metadata.role, 'a')
    await f.kill()
  }
})
await step('snapshot: sandboxes of it have the files; list, delete', async () => {
  await a.files.write('snap.txt', 'in the snapshot')
  const snap = await a.createSnapshot()
  try {
    assert.match(snap.snapshotId, /^snap-[0-9a-f]{12}$/)
    assert.equal(await a.files.read('snap.txt'), 'in the snapshot') // the sandbox resumed
    const listed = await a.listSnapshots().nextItems()
    assert.deepEqual(listed.map(s => s.snapshotId), [snap.snapshotId])
    const c = await Sandbox.create(snap.snapshotId)
    assert.equal(await c.files.read('snap.txt'), 'in the snapshot')
    assert.equal((await c.commands.run('whoami')).stdout, 'user\n')
    await c.kill()
  } finally {
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true)
  }
  assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), false)
})
await step('metrics', async () => {
  const m = await a.getMetrics()
  assert.ok(m.length >= 1 && m[0].memTotal > 0)
})
await step('kill', async () => {
  assert.equal(await a.kill(), true)
  assert.equal(await Sandbox.kill(b.sandboxId), true)
  assert.equal(await Sandbox.kill(b.sandboxId), false)
  await assert.rejects(Sandbox.getInfo(a.sandboxId), NotFoundError)
  const items = await Sandbox.list({ query: { metadata: { suite: run } } }).nextItems()
  assert.equal(items.length, 0)
})
