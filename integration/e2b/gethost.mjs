// getHost(port) reaches a server in the sandbox through wisp's URL front
// door. Node does not resolve *.localhost, so the request goes to the
// front door's address (FRONT_DOOR) with getHost's name as its Host, as a
// browser or curl (which resolve *.localhost to loopback) would send it.
import http from 'node:http'
import { Sandbox } from 'e2b'
import { assert, step, until } from './lib.mjs'

function get(front, host) {
  const [addr, port] = front.split(':')
  return new Promise((resolve, reject) => {
    const req = http.get({ host: addr, port, path: '/hello.txt', headers: { Host: host } }, res => {
      let body = ''
      res.on('data', d => { body += d })
      res.on('end', () => resolve({ status: res.statusCode, body }))
    })
    req.on('error', reject)
  })
}

const sbx = await Sandbox.create()
try {
  await step('getHost(port) reaches a server in the sandbox', async () => {
    await sbx.files.write('site/hello.txt', 'hello from the sandbox')
    await sbx.commands.run('python3 -m http.server 8000', { background: true, cwd: 'site' })
    const host = sbx.getHost(8000)
    assert.equal(host, `8000-${sbx.sandboxId}.e2b.localhost:${process.env.FRONT_DOOR.split(':')[1]}`)
    let res
    await until('the server to answer', 30_000, async () => (res = await get(process.env.FRONT_DOOR, host)).status === 200)
    assert.equal(res.body, 'hello from the sandbox')
  })
} finally {
  await sbx.kill()
}
