// Helpers of the E2B SDK programs the integration tests run against wispd.
import assert from 'node:assert/strict'
export { assert }

// until polls fn (async, truthy when done) every 100 ms up to ms.
export async function until(what, ms, fn) {
  const end = Date.now() + ms
  let last
  while (Date.now() < end) {
    try { if (await fn()) return } catch (e) { last = e }
    await new Promise(r => setTimeout(r, 100))
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? ': ' + last : ''}`)
}

// step runs one named check and says so.
export async function step(name, fn) {
  const t0 = Date.now()
  try {
    await fn()
  } catch (e) {
    console.error(`FAIL ${name}: ${e?.stack ?? e}`)
    process.exitCode = 1
    throw e
  }
  console.log(`ok ${name} (${Date.now() - t0} ms)`)
}
