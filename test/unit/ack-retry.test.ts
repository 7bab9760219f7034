/**
 * src/broker/upstream.ts, workaround 15: acknowledgement releases whose script failed are kept and
 * run again, in order, when Redis answers (the connection's 'ready', or the next script that
 * succeeds); an error Redis itself answered gives its releases up instead of failing forever; at
 * most UNRELEASED_MAX are kept, the oldest given up first. Redis here is a stand-in whose script
 * answers as the test says (the real script and Redis: test/upstream-redis.test.ts).
 */
import { EventEmitter } from 'node:events'
import { ReplyError, type Redis } from 'ioredis'
import { leanRedisAcks, UNRELEASED_MAX, redisPacketKey } from '../../src/broker/upstream.js'

type Mode = 'ok' | 'down' | 'reply' | 'hang'

function standIn (): { conn: Redis, mode: (m: Mode) => void, calls: string[][], release: () => void } {
  const conn = new EventEmitter() as EventEmitter & { mqimAcks?: (...args: Array<string | number>) => Promise<number>, defineCommand: () => void }
  let mode: Mode = 'ok'
  const calls: string[][] = []
  let hung: (() => void) | null = null
  conn.defineCommand = () => {}
  conn.mqimAcks = async (count, ...keys) => {
    const packets = (keys as string[]).filter((_, i) => i % 3 === 1)
    calls.push(packets)
    if (mode === 'down') throw new Error('Connection is closed.')
    if (mode === 'reply') throw new ReplyError('OOM command not allowed when used memory > \'maxmemory\'.')
    if (mode === 'hang') await new Promise<void>(resolve => { hung = resolve }).then(() => { throw new Error('Connection is closed.') })
    return Number(count) * 0
  }
  return { conn: conn as unknown as Redis, mode: (m) => { mode = m }, calls, release: () => { hung?.() } }
}

interface Acks { outgoingUpdate: (c: object, p: object) => Promise<void>, outgoingClearMessageId: (c: object, p: object) => Promise<unknown> }

function lean (conn: Redis, queueMax = 21): { store: Acks, failed: number[], retried: number[], givenUp: number[] } {
  const failed: number[] = []
  const retried: number[] = []
  const givenUp: number[] = []
  const base: Acks = { outgoingUpdate: async () => {}, outgoingClearMessageId: async () => undefined }
  const store = leanRedisAcks(base, conn, { perConnection: 100_000, queueMax, onFailure: (_e, n) => { failed.push(n) }, onRetried: (n) => { retried.push(n) }, onGivenUp: (n) => { givenUp.push(n) } })
  return { store, failed, retried, givenUp }
}

const client = { id: 'u:a' }
const packet = (n: number): Record<string, unknown> => ({ cmd: 'publish', qos: 1, brokerId: 'b', brokerCounter: n, messageId: n % 65536, topic: 't', payload: Buffer.alloc(0) })
async function ack (store: Acks, ns: number[]): Promise<void> {
  for (const n of ns) await store.outgoingUpdate(client, packet(n))
  await Promise.all(ns.map(async n => await store.outgoingClearMessageId(client, { messageId: n % 65536 })))
}
const keys = (ns: number[]): string[] => ns.map(n => redisPacketKey('b', n))
const turns = async (n = 3): Promise<void> => { for (let i = 0; i < n; i++) await new Promise(resolve => setImmediate(resolve)) }

describe('acknowledgement releases kept after a failure', () => {
  test('kept in order while Redis is down, run again on ready; kept meanwhile go after the older ones', async () => {
    const r = standIn()
    const { store, failed, retried } = lean(r.conn)
    r.mode('down')
    await ack(store, [1, 2, 3])
    await ack(store, [4, 5])
    expect(failed).toEqual([3, 2])
    // a retry whose script hangs, then fails; releases failing meanwhile are kept after its older ones
    r.mode('hang')
    r.conn.emit('ready')
    await turns()
    r.mode('down')
    await ack(store, [6])
    r.release()
    await turns()
    r.calls.length = 0
    r.mode('ok')
    r.conn.emit('ready')
    await turns()
    expect(r.calls).toEqual([keys([1, 2, 3, 4, 5, 6])])
    expect(retried).toEqual([6])
    // nothing kept: a ready runs no script
    r.calls.length = 0
    r.conn.emit('ready')
    await turns()
    expect(r.calls).toEqual([])
  })

  test('after the next script that succeeds, with no ready; an error Redis answered gives those releases up', async () => {
    const r = standIn()
    const { store, retried, givenUp } = lean(r.conn)
    r.mode('down')
    await ack(store, [1, 2])
    r.mode('ok')
    await ack(store, [3])
    await turns()
    expect(r.calls.slice(-2)).toEqual([keys([3]), keys([1, 2])])
    expect(retried).toEqual([2])
    // refused by Redis (out of memory): kept once, tried again once, then given up, not retried forever
    r.mode('reply')
    await ack(store, [4])
    r.conn.emit('ready')
    await turns()
    expect(givenUp).toEqual([1])
    r.mode('ok')
    r.calls.length = 0
    r.conn.emit('ready')
    await ack(store, [5])
    await turns()
    expect(r.calls).toEqual([keys([5])])
  })

  test(`at most ${UNRELEASED_MAX} kept: the oldest given up first`, async () => {
    const r = standIn()
    const { store, givenUp } = lean(r.conn)
    r.mode('down')
    const ns = Array.from({ length: UNRELEASED_MAX + 5 }, (_, i) => i + 1)
    await ack(store, ns)
    expect(givenUp.reduce((a, b) => a + b, 0)).toBe(5)
    r.calls.length = 0
    r.mode('ok')
    r.conn.emit('ready')
    await turns(100)
    const run = r.calls.flat()
    expect(run).toHaveLength(UNRELEASED_MAX)
    expect(run[0]).toBe(redisPacketKey('b', 6))
    expect(run.at(-1)).toBe(redisPacketKey('b', UNRELEASED_MAX + 5))
  })
})
