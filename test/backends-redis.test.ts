/**
 * The cluster's link to Redis as the rest of the node reads it (src/broker/backends.ts): since when
 * the subscriber connection has heard the other nodes without a break, on the wall clock (compared
 * with stored messages' times) and on the monotonic clock (how long the link has been up: the
 * sequencer's complete tails and the users-elsewhere lists; a wall clock stepped forward must not
 * make a link that just came back look old). On the test Redis, a database no other test uses.
 */
import { jest } from '@jest/globals'
import { Redis } from 'ioredis'
import { ackReports, createBrokerBackends, type BrokerBackends } from '../src/broker/backends.js'
import { createLogger } from '../src/log.js'
import { redisUrl } from './helpers/db.js'
import { waitUntil } from '../scripts/lib/procs.js'

const REDIS_DB = 27

describe('broker backends on Redis: the link\'s age', () => {
  let backends: BrokerBackends | null = null
  let admin: Redis | null = null
  afterAll(async () => {
    await backends?.close()
    await admin?.quit()
  })

  test('up since its start on both clocks, +Infinity while the subscriber is down, and since its return after', async () => {
    const url = new URL(redisUrl())
    url.pathname = `/${REDIS_DB}`
    const before = { wall: Date.now(), mono: performance.now() }
    backends = createBrokerBackends({ adapter: 'redis', url: url.toString(), packetTTLSeconds: 60, maxSessionDelivery: 100, watchersListMs: 10_000, socketTimeoutMs: 10_000 },
      { sessionQueueMessages: 100, sessionQueueBytes: 1 << 20 }, createLogger('silent'))
    const b = backends
    await waitUntil(() => b.available(), 10_000)
    // a performance.now time (this process's), not an epoch time; the wall one an epoch time
    expect(b.linkUpSince()).toBeGreaterThanOrEqual(before.mono)
    expect(b.linkUpSince()).toBeLessThanOrEqual(performance.now())
    expect(b.connectedSince()).toBeGreaterThanOrEqual(before.wall)
    expect(b.connectedSince()).toBeLessThanOrEqual(Date.now())
    const first = b.linkUpSince()

    // the subscriber connection cut by Redis (found by its name and database): down, then back later
    admin = new Redis(url.toString())
    const list = await admin.client('LIST') as string
    const subs = list.split('\n').filter(l => / name=mqim-sub /.test(l) && new RegExp(` db=${REDIS_DB} `).test(l))
    expect(subs).toHaveLength(1)
    const id = /\bid=(\d+)/.exec(subs[0] ?? '')?.[1]
    expect(id).toBeDefined()
    await admin.client('KILL', 'ID', String(id))
    await waitUntil(() => b.linkUpSince() === Number.POSITIVE_INFINITY, 5_000)
    expect(b.connectedSince()).toBe(Number.POSITIVE_INFINITY)
    await waitUntil(() => Number.isFinite(b.linkUpSince()), 10_000)
    expect(b.linkUpSince()).toBeGreaterThan(first)
    expect(b.linkUpSince()).toBeLessThanOrEqual(performance.now())
    expect(b.connectedSince()).toBeLessThanOrEqual(Date.now())
  })

  test('acknowledgements Redis did not release: one warning a minute with how many since the last, told at the end of the minute also when nothing fails after, and a line when they are released after all', () => {
    jest.useFakeTimers()
    try {
      const lines: Array<[string, Record<string, unknown>]> = []
      const logger = {
        warn: (fields: Record<string, unknown>) => { lines.push(['warn', fields]) },
        info: (fields: Record<string, unknown>) => { lines.push(['info', fields]) }
      } as unknown as Parameters<typeof ackReports>[0]
      let now = 0
      const r = ackReports(logger, () => now)
      r.onFailure?.(new Error('down'), 1000)
      r.onFailure?.(new Error('down'), 300)
      r.onGivenUp?.(7)
      expect(lines).toEqual([['warn', { err: 'down', acks: 1000, givenUp: 0 }]])
      // the rest of the minute's count, at its end, with nothing failing after
      now += 60_000
      jest.advanceTimersByTime(60_000)
      expect(lines).toEqual([['warn', { err: 'down', acks: 1000, givenUp: 0 }], ['warn', { err: 'down', acks: 300, givenUp: 7 }]])
      // a failure a minute after that is told at once
      now += 60_000
      r.onFailure?.(new Error('still down'), 5)
      expect(lines[2]).toEqual(['warn', { err: 'still down', acks: 5, givenUp: 0 }])
      jest.advanceTimersByTime(120_000)
      expect(lines).toHaveLength(3) // (nothing pending: no line)
      r.onRetried?.(1305)
      expect(lines[3]).toEqual(['info', { acks: 1305 }])
    } finally {
      jest.useRealTimers()
    }
  })
})
