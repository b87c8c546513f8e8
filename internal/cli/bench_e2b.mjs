// wisp bench e2b: the published e2b SDK against wispd's E2B API.
// Prints {create, create_to_first_run, run_true, run_true_settled}:
// milliseconds. run_true_settled: from SETTLE_MS after the create (a
// gVisor sandbox's clocks are calibrated about a second after it starts).
import { Sandbox } from 'e2b'

const runs = Number(process.env.RUNS || 5)
const metadata = process.env.WISP_BACKEND ? { 'wisp.backend': process.env.WISP_BACKEND } : {}
const settle = Number(process.env.SETTLE_MS || 2500)
const out = { create: [], create_to_first_run: [], run_true: [], run_true_settled: [] }
const ms = t0 => Number(process.hrtime.bigint() - t0) / 1e6

// runTrue times 10 commands.run('true') in sbx into samples.
async function runTrue (sbx, samples) {
  for (let j = 0; j < 10; j++) {
    const t1 = process.hrtime.bigint()
    await sbx.commands.run('true')
    samples.push(ms(t1))
  }
}

// One untimed round first: the SDK's client sets itself up at its first
// calls, a cost of the Node process rather than of a create.
const warm = await Sandbox.create({ metadata })
await warm.commands.run('true')
await warm.kill()
for (let i = 0; i < runs; i++) {
  const t0 = process.hrtime.bigint()
  const sbx = await Sandbox.create({ metadata })
  out.create.push(ms(t0))
  try {
    await sbx.commands.run('true')
    out.create_to_first_run.push(ms(t0))
    await runTrue(sbx, out.run_true)
    const wait = settle - ms(t0)
    if (wait > 0) await new Promise(resolve => setTimeout(resolve, wait))
    await runTrue(sbx, out.run_true_settled)
  } finally {
    await sbx.kill()
  }
  process.stderr.write(`bench: e2b run ${i + 1}/${runs}\n`)
}
console.log(JSON.stringify(out))
