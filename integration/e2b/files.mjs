// files: write, read, list, exists, makeDir, rename, remove, watchDir,
// upload and download through signed URLs.
import { Sandbox, NotFoundError, FilesystemEventType } from 'e2b'
import { assert, step, until } from './lib.mjs'

const sbx = await Sandbox.create()
try {
  await step('write and read', async () => {
    const info = await sbx.files.write('/home/user/a/b/hello.txt', 'hello files')
    assert.equal(info.path, '/home/user/a/b/hello.txt')
    assert.equal(await sbx.files.read('/home/user/a/b/hello.txt'), 'hello files')
    assert.equal(await sbx.files.read('a/b/hello.txt'), 'hello files') // relative: the user's home
    const bytes = new Uint8Array([0, 1, 2, 255])
    await sbx.files.write('bin.dat', bytes)
    assert.deepEqual(await sbx.files.read('bin.dat', { format: 'bytes' }), bytes)
    const owner = await sbx.commands.run('stat -c %U /home/user/a/b/hello.txt /home/user/a')
    assert.equal(owner.stdout, 'user\nuser\n')
    await sbx.files.write([{ path: 'm1.txt', data: 'one' }, { path: 'm2.txt', data: 'two' }])
    assert.equal(await sbx.files.read('m2.txt'), 'two')
    await sbx.files.write('/root/secret.txt', 'root file', { user: 'root' })
    assert.equal((await sbx.commands.run('stat -c %U /root/secret.txt', { user: 'root' })).stdout, 'root\n')
    await assert.rejects(sbx.files.read('/nope/missing.txt'), NotFoundError)
  })
  await step('list, exists, getInfo', async () => {
    const entries = await sbx.files.list('/home/user/a')
    assert.deepEqual(entries.map(e => [e.name, e.type]), [['b', 'dir']])
    const deep = await sbx.files.list('/home/user/a', { depth: 2 })
    assert.deepEqual(deep.map(e => e.path).sort(), ['/home/user/a/b', '/home/user/a/b/hello.txt'])
    assert.equal(await sbx.files.exists('a/b/hello.txt'), true)
    assert.equal(await sbx.files.exists('a/b/nothing.txt'), false)
    const st = await sbx.files.getInfo('a/b/hello.txt')
    assert.equal(st.size, 11)
    assert.equal(st.type, 'file')
  })
  await step('makeDir, rename, remove', async () => {
    assert.equal(await sbx.files.makeDir('new/dir'), true)
    assert.equal(await sbx.files.makeDir('new/dir'), false)
    const moved = await sbx.files.rename('a/b/hello.txt', 'new/dir/moved.txt')
    assert.equal(moved.path, '/home/user/new/dir/moved.txt')
    assert.equal(await sbx.files.exists('a/b/hello.txt'), false)
    assert.equal(await sbx.files.read('new/dir/moved.txt'), 'hello files')
    await sbx.files.remove('new')
    assert.equal(await sbx.files.exists('new'), false)
  })
  await step('watchDir', async () => {
    await sbx.files.makeDir('watched')
    const events = []
    const w = await sbx.files.watchDir('watched', e => events.push(e))
    await sbx.files.write('watched/f.txt', 'x')
    await until('a create event', 10000, () => events.some(e => e.name === 'f.txt' && e.type === FilesystemEventType.CREATE))
    await sbx.files.remove('watched/f.txt')
    await until('a remove event', 10000, () => events.some(e => e.name === 'f.txt' && e.type === FilesystemEventType.REMOVE))
    await w.stop()
  })
  await step('upload and download through signed URLs', async () => {
    const up = await sbx.uploadUrl('/home/user/up/uploaded.txt')
    assert.match(up, /signature=v1_/)
    const form = new FormData()
    form.append('file', new Blob(['uploaded body']), 'uploaded.txt')
    const res = await fetch(up, { method: 'POST', body: form })
    assert.equal(res.status, 200, await res.text())
    assert.equal(await sbx.files.read('/home/user/up/uploaded.txt'), 'uploaded body')
    const down = await sbx.downloadUrl('/home/user/up/uploaded.txt', { useSignatureExpiration: 60 })
    const got = await fetch(down) // as anyone would: the URL alone
    assert.equal(got.status, 200)
    assert.equal(await got.text(), 'uploaded body')
    const forged = down.replace(/signature=v1_[^&]+/, 'signature=v1_forged')
    assert.equal((await fetch(forged)).status, 401)
  })
} finally {
  await sbx.kill()
}
