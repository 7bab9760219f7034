/**
 * The machine calibration the soak records around its load (scripts/bench/lib/calibrate.ts): a
 * CPU workload and loopback round trips to an echo child, which is gone afterwards.
 */
import { readFileSync, readdirSync } from 'node:fs'
import { calibrate, cpuRound } from '../../scripts/bench/lib/calibrate.js'

/** Pids of this process's children (every thread's /proc children list). */
function children (): number[] {
  const pids: number[] = []
  for (const tid of readdirSync('/proc/self/task')) {
    let list = ''
    try {
      list = readFileSync(`/proc/self/task/${tid}/children`, 'utf8').trim()
    } catch {
      continue // a thread that ended meanwhile
    }
    if (list !== '') pids.push(...list.split(/\s+/).map(Number))
  }
  return pids.sort((a, b) => a - b)
}

test('figures of the workload and of the round trips: finite, positive, p99 at least p50, the warm-up left out; the echo process is gone', async () => {
  const before = children()
  const c = await calibrate({ cpuObjects: 2000, roundTrips: 200, timeoutMs: 10_000 })
  expect(Number.isFinite(c.cpu_ms) && c.cpu_ms > 0).toBe(true)
  expect(c.cpu_ms_min).toBeGreaterThan(0)
  expect(c.cpu_ms_min).toBeLessThanOrEqual(c.cpu_ms)
  // the rest of the machine's CPU meanwhile: a share of one core, never negative (null without /proc/stat)
  if (c.cpu_others_pct !== null) expect(c.cpu_others_pct).toBeGreaterThanOrEqual(0)
  expect(c.loopback_rtt_us.n).toBe(190)
  expect(c.loopback_rtt_us.p50).toBeGreaterThan(0)
  expect(c.loopback_rtt_us.p99).toBeGreaterThanOrEqual(c.loopback_rtt_us.p50)
  // a round trip through the kernel and another process takes microseconds, not nothing, and not seconds
  expect(c.loopback_rtt_us.p50).toBeLessThan(1_000_000)
  expect(children()).toStrictEqual(before)
}, 30_000)

test('more work takes longer', () => {
  cpuRound(5000)
  const small = Math.min(cpuRound(1000), cpuRound(1000), cpuRound(1000))
  const large = Math.min(cpuRound(20_000), cpuRound(20_000), cpuRound(20_000))
  expect(large).toBeGreaterThan(small)
})

test('round trips that do not finish in time: refused when the time is up, and the echo process is killed', async () => {
  const before = children()
  const t0 = Date.now()
  await expect(calibrate({ cpuObjects: 100, roundTrips: 50_000_000, timeoutMs: 300 })).rejects.toThrow()
  expect(Date.now() - t0).toBeLessThan(15_000)
  expect(children()).toStrictEqual(before)
}, 30_000)

test('bad options are refused before anything starts', async () => {
  const before = children()
  for (const options of [{ cpuObjects: 0 }, { cpuObjects: 1.5 }, { cpuObjects: Number.NaN }, { roundTrips: 19 }, { roundTrips: -1 }, { roundTrips: Number.POSITIVE_INFINITY },
    { timeoutMs: 0 }, { timeoutMs: Number.NaN }, { timeoutMs: Number.POSITIVE_INFINITY }, { timeoutMs: 2 ** 31 }]) {
    await expect(calibrate(options)).rejects.toThrow(RangeError)
  }
  expect(children()).toStrictEqual(before)
})
