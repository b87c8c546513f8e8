// pty: create, input, resize.
import { Sandbox } from 'e2b'
import { assert, step, until } from './lib.mjs'

const sbx = await Sandbox.create()
try {
  await step('pty create, input, resize', async () => {
    let out = ''
    const dec = new TextDecoder()
    const t = await sbx.pty.create({ cols: 80, rows: 24, onData: d => { out += dec.decode(d, { stream: true }) } })
    assert.ok(t.pid > 0)
    await sbx.pty.sendInput(t.pid, new TextEncoder().encode('stty size; echo tty=$(tty | cut -c1-8)\n'))
    await until('the pty size', 20000, () => out.includes('24 80') && out.includes('tty=/dev/pts'))
    await sbx.pty.resize(t.pid, { cols: 100, rows: 30 })
    await sbx.pty.sendInput(t.pid, new TextEncoder().encode('stty size; whoami\n'))
    await until('the new size', 20000, () => out.includes('30 100') && out.includes('user'))
    await sbx.pty.sendInput(t.pid, new TextEncoder().encode('exit 0\n'))
    const r = await t.wait()
    assert.equal(r.exitCode, 0)
  })
  await step('pty kill', async () => {
    const t = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {} })
    assert.equal(await sbx.pty.kill(t.pid), true)
    await t.wait().catch(() => {})
  })
} finally {
  await sbx.kill()
}
