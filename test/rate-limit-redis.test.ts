/**
 * The per-user rate limit's exchange between nodes (src/broker/rate-limit.ts) on the test Redis:
 * two limiters stand for two nodes, with a clock of the test's own; each exchange is run by hand
 * (their timers stopped at once: an exchange of the timer's own would run with the test's clock
 * and report the same second again), but in the test of the timer itself.
 */
import { jest } from '@jest/globals'
import { Redis } from 'ioredis'
import { randomBytes } from 'node:crypto'
import { EXCHANGE_PHASE_MS, EXCHANGE_USERS, UserRateLimiter } from '../src/broker/rate-limit.js'
import { redisUrl } from './helpers/db.js'
import { recordingLogger } from './helpers/recording-logger.js'

const conns: Redis[] = []
const limiters: UserRateLimiter[] = []
let prefix = ''

afterEach(async () => {
  for (const l of limiters.splice(0)) l.close()
  const admin = new Redis(redisUrl())
  const keys = await admin.keys(`${prefix}*`)
  if (keys.length > 0) await admin.del(...keys)
  await admin.quit()
  for (const c of conns.splice(0)) await c.quit().catch(() => c.disconnect())
})

/** Two nodes' limiters on one Redis, their clock at `t` (ms; moved by the test). */
function twoNodes (rate: number, burst: number): { a: UserRateLimiter, b: UserRateLimiter, redis: Redis, clock: { t: number } } {
  // a prefix of its own per test: nothing of another test or run is seen
  prefix = `test-rl-${randomBytes(6).toString('hex')}:`
  const clock = { t: 1_800_000_000_000 }
  const { logger } = recordingLogger('warn')
  const redis = new Redis(redisUrl())
  conns.push(redis)
  const make = (): UserRateLimiter => {
    const l = new UserRateLimiter(rate, burst, () => clock.t, { redis, logger, prefix })
    l.close() // the timer only: exchange() still runs
    return l
  }
  return { a: make(), b: make(), redis, clock }
}

async function exchangeBoth (a: UserRateLimiter, b: UserRateLimiter): Promise<void> {
  await Promise.all([a.exchange(), b.exchange()])
}

test('what each node granted in a second is charged to the other node\'s bucket two seconds later', async () => {
  const { a, b, redis, clock } = twoNodes(1, 20)
  const second = Math.floor(clock.t / 1000)
  for (let i = 0; i < 15; i++) expect(a.take('u1')).toBe(true)
  for (let i = 0; i < 12; i++) expect(b.take('u1')).toBe(true)
  // a user of one node only: nothing to charge anywhere
  for (let i = 0; i < 3; i++) expect(a.take('solo')).toBe(true)
  clock.t += 1000
  await exchangeBoth(a, b) // reports `second`
  expect(await redis.hgetall(`${prefix}${second}`)).toStrictEqual({ u1: '27', solo: '3' })
  const ttl = await redis.ttl(`${prefix}${second}`)
  expect(ttl).toBeGreaterThan(0)
  expect(ttl).toBeLessThanOrEqual(10)
  // one hash per second, no key per user
  expect(await redis.keys(`${prefix}*`)).toStrictEqual([`${prefix}${second}`])
  expect(a.msUntilNext('u1')).toBe(0) // not settled yet: 5 + 1 refilled
  clock.t += 1000
  await exchangeBoth(a, b) // settles `second`
  // a: 20 - 15 + 2 refilled - 12 from b = -5 → 6 s until a token; b: 20 - 12 + 2 - 15 = -5
  expect(a.msUntilNext('u1')).toBe(6000)
  expect(b.msUntilNext('u1')).toBe(6000)
  expect(a.take('u1')).toBe(false)
  expect(a.msUntilNext('solo')).toBe(0)
})

test('a second is reported once, however often the exchange runs in the next one', async () => {
  const { a, redis, clock } = twoNodes(1, 20)
  const second = Math.floor(clock.t / 1000)
  for (let i = 0; i < 5; i++) a.take('u')
  clock.t += 1000
  await a.exchange()
  await a.exchange()
  clock.t += 300
  await a.exchange()
  expect(await redis.hget(`${prefix}${second}`, 'u')).toBe('5')
})

test('while an exchange waits for Redis, the next second is not exchanged (one exchange at a time)', async () => {
  const { a, redis, clock } = twoNodes(1, 20)
  const second = Math.floor(clock.t / 1000)
  a.take('u')
  clock.t += 1000
  a.take('u') // in second + 1
  await redis.ping() // connected: the next command sent is the exchange's
  // the first exchange's script is held until the test lets it go
  let release = (): void => {}
  const held = new Promise<void>(resolve => { release = resolve })
  const send = redis.sendCommand.bind(redis)
  const spy = jest.spyOn(redis, 'sendCommand').mockImplementationOnce((command, ...rest) => {
    void held.then(() => send(command, ...rest))
    return command.promise
  })
  const first = a.exchange()
  clock.t += 1000
  await a.exchange() // second + 1: skipped, the first still waits
  // what is granted meanwhile is kept for the seconds that can still be exchanged only, whether
  // exchanges run or not (a Redis that takes long to fail holds this one for socketTimeoutMs)
  const granted = (a as unknown as { granted: Map<number, unknown> }).granted
  for (let i = 0; i < 10; i++) {
    clock.t += 1000
    a.take('v')
  }
  const now = Math.floor(clock.t / 1000) // second + 11
  expect([...granted.keys()].every(s => s >= now - 2)).toBe(true)
  release()
  await first
  spy.mockRestore()
  expect(await redis.hget(`${prefix}${second}`, 'u')).toBe('1')
  expect(await redis.exists(`${prefix}${second + 1}`)).toBe(0)
  // and the exchanges go on after it
  a.take('u')
  clock.t += 1000
  await a.exchange()
  expect(await redis.hget(`${prefix}${now}`, 'u')).toBe('1') // taken in second + 11
})

test('the limiter\'s own timer exchanges every second, a quarter of a second into it', async () => {
  prefix = `test-rl-${randomBytes(6).toString('hex')}:`
  const { logger } = recordingLogger('warn')
  const redis = new Redis(redisUrl())
  conns.push(redis)
  // a clock that starts 900 ms into a second and runs at the real pace
  const base = 1_800_000_000_900
  const t0 = performance.now()
  const now = (): number => base + (performance.now() - t0)
  const timeouts = jest.spyOn(globalThis, 'setTimeout')
  const l = new UserRateLimiter(1, 20, now, { redis, logger, prefix })
  limiters.push(l)
  const delay = Number(timeouts.mock.calls[0]?.[1])
  timeouts.mockRestore()
  // the first exchange 100 ms to the next second and 250 ms into it
  expect(delay).toBeGreaterThan(1000 - 900 + EXCHANGE_PHASE_MS - 20)
  expect(delay).toBeLessThanOrEqual(1000 - 900 + EXCHANGE_PHASE_MS)
  // a request in every second until one of them is reported (an exchange that a stalled machine
  // runs past the next second reports that one, not the one before)
  const seconds = new Set<number>()
  let reported: string | undefined
  const until = performance.now() + 5000
  while (reported === undefined && performance.now() < until) {
    const second = Math.floor(now() / 1000)
    if (!seconds.has(second) && l.take('u')) seconds.add(second)
    await new Promise(resolve => setTimeout(resolve, 50))
    for (const s of seconds) if (await redis.hget(`${prefix}${s}`, 'u') === '1') reported = String(s)
  }
  expect(reported).toBeDefined()
})

test('fractional charges and refunds are reported as they are', async () => {
  const { a, b, redis, clock } = twoNodes(1, 20)
  const second = Math.floor(clock.t / 1000)
  expect(a.take('u')).toBe(true)
  expect(a.charge('u', 2.25)).toBe(2.25)
  a.refund('u', 1)
  expect(b.take('u')).toBe(true)
  clock.t += 1000
  await exchangeBoth(a, b)
  expect(await redis.hget(`${prefix}${second}`, 'u')).toBe('3.25')
  clock.t += 1000
  await exchangeBoth(a, b)
  // a: 20 - 1 - 2.25 + 1 + 2 refilled - 1 from b = 18.75; b: 20 - 1, refilled to 20, - 2.25 from a = 17.75
  const takes = (l: UserRateLimiter): number => { let n = 0; while (l.take('u')) n++; return n }
  expect(takes(a)).toBe(18)
  expect(takes(b)).toBe(17)
})

test(`thousands of users: each settled with its own count, in scripts of ${EXCHANGE_USERS} users at most`, async () => {
  // almost no refill: a bucket's state shows what was charged
  const { a, b, redis, clock } = twoNodes(0.001, 2)
  const users = Array.from({ length: 2500 }, (_, i) => [`user-${i}`, `a:b ${i}`, `{x}${i}`, `ü-${i}`][i % 4] as string)
  for (const [i, u] of users.entries()) {
    expect(a.take(u)).toBe(true) // a: 1 left
    // every 7th user only on a: a keeps its token
    if (i % 7 !== 0) {
      expect(b.take(u)).toBe(true)
      expect(b.take(u)).toBe(true) // b: 0 left
    }
  }
  await redis.ping() // connected: its ready check is not counted below
  const spy = jest.spyOn(redis, 'sendCommand')
  clock.t += 1000
  await a.exchange()
  await b.exchange()
  clock.t += 1000
  await a.exchange()
  await b.exchange()
  const sent = spy.mock.calls.map(([command]) => command.name)
  spy.mockRestore()
  // 3 scripts per exchange (2,500 users reported or settled), where the old exchange sent an
  // INCRBY and an EXPIRE per user reported and a GET per user settled; ioredis sends a script again when Redis did not have it yet (as EVAL): at
  // most the 3 of the first exchange
  const scripts = sent.filter(n => n === 'evalsha' || n === 'eval').length
  expect(scripts).toBeGreaterThanOrEqual(4 * Math.ceil(users.length / EXCHANGE_USERS))
  expect(scripts).toBeLessThanOrEqual(5 * Math.ceil(users.length / EXCHANGE_USERS))
  expect(sent.filter(n => n !== 'evalsha' && n !== 'eval')).toStrictEqual([])
  for (const [i, u] of users.entries()) {
    if (i % 7 === 0) {
      expect([u, a.msUntilNext(u)]).toStrictEqual([u, 0])
    } else {
      // a: 1 - 2 from b; b: 0 - 1 from a
      expect([u, a.take(u), b.take(u)]).toStrictEqual([u, false, false])
    }
  }
})

test('an exchange while Redis is unreachable warns (once a minute) and each node counts its own requests only', async () => {
  prefix = `test-rl-${randomBytes(6).toString('hex')}:`
  const { logger, lines } = recordingLogger('debug')
  // a connection that has ended: every command fails at once ("Connection is closed")
  const down = new Redis(redisUrl())
  await down.quit()
  const clock = { t: 1_800_000_000_000 }
  const l = new UserRateLimiter(1, 5, () => clock.t, { redis: down, logger, prefix })
  l.close()
  for (let i = 0; i < 5; i++) expect(l.take('u')).toBe(true)
  clock.t += 1000
  await expect(l.exchange()).resolves.toBeUndefined()
  clock.t += 1000
  await expect(l.exchange()).resolves.toBeUndefined()
  const warnings = lines.filter(line => typeof line.msg === 'string' && line.msg.startsWith('request rates could not be exchanged'))
  expect(warnings).toHaveLength(1)
  expect(warnings[0]?.err).toMatch(/closed/i)
  // 2 s refilled, nothing charged from elsewhere
  expect(l.take('u')).toBe(true)
  expect(l.take('u')).toBe(true)
  expect(l.take('u')).toBe(false)
})
