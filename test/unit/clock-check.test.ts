/**
 * The cluster's clock check (src/broker/clock-check.ts) against a stand-in for Redis' TIME and a
 * virtual clock: the offset of the sample with the shortest round trip, round trips too long to
 * say anything, a warning beyond 100 ms, answers that are not numbers, and a failing TIME.
 */
import { startClockCheck, MAX_RTT_MS, type ClockCheck } from '../../src/broker/clock-check.js'
import { recordingLogger } from '../helpers/recording-logger.js'
import { waitUntil } from '../../scripts/lib/procs.js'

/**
 * Redis' clock is `offsetMs` behind this node's; each TIME takes the next of `rtts` (ms, on the
 * virtual clock), Redis answering 1 ms after it was asked (the rest of a long round trip is the
 * way back: only the shortest round trip gives the offset exactly).
 */
function fakeRedis (offsetMs: number, rtts: number[]): { redis: { time: () => Promise<Array<string | number>> }, now: () => number } {
  let clock = 1_800_000_000_000
  let i = 0
  return {
    now: () => clock,
    redis: {
      time: async () => {
        const rtt = rtts[i++ % rtts.length] ?? 2
        clock += 1
        const redisMs = clock - offsetMs
        clock += rtt - 1
        return [String(Math.floor(redisMs / 1000)), String(Math.round((redisMs % 1000) * 1000))]
      }
    }
  }
}

const checks: ClockCheck[] = []
afterEach(() => { for (const c of checks.splice(0)) c.close() })
const start = (...args: Parameters<typeof startClockCheck>): ClockCheck => {
  const c = startClockCheck(...args)
  checks.push(c)
  return c
}

test('the offset is this clock minus Redis\', from the sample with the shortest round trip; within 100 ms nothing is logged', async () => {
  const { logger, lines } = recordingLogger()
  const { redis, now } = fakeRedis(40, [30, 2, 12])
  // the check runs at start (and every interval)
  const check = start(redis, logger, { now, intervalMs: 3_600_000 })
  await waitUntil(() => check.offsetSeconds() !== null, 2000)
  expect(check.offsetSeconds()).toBeCloseTo(0.040, 3)
  expect(lines.filter(l => l.level === 40)).toStrictEqual([])
})

test('a clock ahead by 350 ms (or behind) is logged as a warning; the offset says by how much', async () => {
  for (const offset of [350, -350]) {
    const { logger, lines } = recordingLogger()
    const { redis, now } = fakeRedis(offset, [2])
    const check = start(redis, logger, { now, intervalMs: 3_600_000 })
    await waitUntil(() => check.offsetSeconds() !== null, 2000)
    expect(check.offsetSeconds()).toBeCloseTo(offset / 1000, 3)
    const warned = lines.filter(l => l.level === 40)
    expect(warned).toHaveLength(1)
    expect(warned[0]).toMatchObject({ offsetMs: offset })
    expect(String(warned[0]?.msg)).toMatch(/NTP/)
  }
})

test('round trips over the limit are not used: no offset until a usable one; a failing or nonsense TIME changes nothing', async () => {
  const { logger, lines } = recordingLogger()
  const slow = fakeRedis(500, [MAX_RTT_MS + 50])
  const check = start(slow.redis, logger, { now: slow.now, intervalMs: 3_600_000 })
  await check.check()
  expect(check.offsetSeconds()).toBeNull()
  expect(lines.filter(l => l.level === 40)).toStrictEqual([])
  const junk = start({ time: async () => ['soon', 'x'] }, logger, { intervalMs: 3_600_000 })
  await junk.check()
  expect(junk.offsetSeconds()).toBeNull()
  // a failing TIME, on the timer's path: logged (debug), not thrown out of the timer
  const failing = start({ time: async () => { throw new Error('Connection is closed.') } }, logger, { intervalMs: 3_600_000 })
  await waitUntil(() => lines.some(l => l.msg === 'clock check: Redis TIME failed'), 2000)
  expect(failing.offsetSeconds()).toBeNull()
})

test('a measured offset stays through two checks without a usable sample, and is unknown after the third', async () => {
  const { logger } = recordingLogger()
  let fail = false
  let clock = 1_800_000_000_000
  const redis = {
    time: async (): Promise<string[]> => {
      if (fail) throw new Error('Connection is closed.')
      clock += 1
      const r = clock - 20
      clock += 1
      return [String(Math.floor(r / 1000)), String(Math.round((r % 1000) * 1000))]
    }
  }
  const check = start(redis, logger, { now: () => clock, intervalMs: 3_600_000 })
  await waitUntil(() => check.offsetSeconds() !== null, 2000)
  fail = true
  await expect(check.check()).rejects.toThrow('Connection is closed.')
  await expect(check.check()).rejects.toThrow('Connection is closed.')
  expect(check.offsetSeconds()).toBeCloseTo(0.020, 3)
  await expect(check.check()).rejects.toThrow('Connection is closed.')
  expect(check.offsetSeconds()).toBeNull()
  // and measured again once TIME answers
  fail = false
  await check.check()
  expect(check.offsetSeconds()).toBeCloseTo(0.020, 3)
})

test('one check at a time (a stalled TIME holds no more than one), and none after close', async () => {
  const { logger } = recordingLogger()
  let calls = 0
  const stalled = start({ time: async () => { calls++; return await new Promise<string[]>(() => {}) } }, logger, { intervalMs: 10 })
  await new Promise(resolve => setTimeout(resolve, 150))
  expect(calls).toBe(1)
  stalled.close()
  let answered = 0
  const quick = start({ time: async () => { answered++; return ['1800000000', '0'] } }, logger, { intervalMs: 10 })
  await waitUntil(() => answered >= 3, 2000)
  quick.close()
  const after = answered
  await new Promise(resolve => setTimeout(resolve, 100))
  expect(answered).toBe(after)
})

test('checked again every interval: a clock that drifts shows in the next check', async () => {
  const { logger } = recordingLogger()
  let offset = 10
  let clock = 1_800_000_000_000
  const redis = { time: async () => { clock += 1; const r = clock - offset; clock += 1; return [String(Math.floor(r / 1000)), String(Math.round((r % 1000) * 1000))] } }
  const check = start(redis, logger, { now: () => clock, intervalMs: 20 })
  await waitUntil(() => check.offsetSeconds() !== null, 2000)
  expect(check.offsetSeconds()).toBeCloseTo(0.010, 3)
  offset = 180
  await waitUntil(() => Math.abs((check.offsetSeconds() ?? 0) - 0.180) < 0.001, 2000)
})
