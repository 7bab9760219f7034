/**
 * The upstream behaviours of mqemitter-redis 7.2.1 (with ioredis 6) and aedes-persistence-redis
 * 11.2.2 that src/broker/upstream.ts works around (workarounds 8, 14, 15 and 16), on the test Redis. 8: close() calls quit() on both of its connections
 * without handling the promises and waits for both to end. With a connection that is already
 * closed (disconnected, or Redis gone), that quit() rejects, nobody handles it (an unhandled
 * rejection: fatal by default), and close() never calls back, so a graceful stop hangs.
 * (The in-process behaviours are in test/unit/upstream.test.ts.)
 */
import { execFileSync } from 'node:child_process'
import { Redis } from 'ioredis'
import mqemitterRedis from 'mqemitter-redis'
import { redisUrl } from './helpers/db.js'
import { waitUntil } from '../scripts/lib/procs.js'
import aedesPersistenceRedis from 'aedes-persistence-redis'
import msgpack from 'msgpack-lite'
import { acksPerScript, type AckReports, boundRedisQueues, closeEmitterQuietly, guardEmitterDecode, leanRedisAcks, redisPacketKey, redisQueueKey, scopeChannelsToDatabase } from '../src/broker/upstream.js'

interface Emitter { close: (cb: () => void) => void, state: NodeJS.EventEmitter }

async function emitterWithClosedConnection (): Promise<{ emitter: Emitter, subConn: Redis }> {
  const pubConn = new Redis(redisUrl(), { maxRetriesPerRequest: 0 })
  const subConn = new Redis(redisUrl(), { maxRetriesPerRequest: 0 })
  pubConn.on('error', () => {})
  subConn.on('error', () => {})
  const emitter = mqemitterRedis({ pubConn, subConn } as unknown as Parameters<typeof mqemitterRedis>[0]) as unknown as Emitter
  emitter.state.on('error', () => {})
  closeEmitterQuietly(emitter)
  await new Promise(resolve => setTimeout(resolve, 100))
  pubConn.disconnect()
  await new Promise(resolve => setTimeout(resolve, 50))
  return { emitter, subConn }
}

async function closesWithin (emitter: Emitter, ms: number): Promise<boolean> {
  return await new Promise(resolve => {
    const timer = setTimeout(() => resolve(false), ms)
    emitter.close(() => { clearTimeout(timer); resolve(true) })
  })
}

describe('mqemitter-redis 7.2.1 close()', () => {
  test('upstream: close() with a closed connection rejects unhandled and never calls back', async () => {
    // in a child process: the unhandled rejection is the behaviour under test (jest would fail on it)
    const script = `
      import { execFileSync } from 'node:child_process'
import { Redis } from 'ioredis'
      import mqemitterRedis from 'mqemitter-redis'
      const pubConn = new Redis(process.env.URL, { maxRetriesPerRequest: 0 })
      const subConn = new Redis(process.env.URL, { maxRetriesPerRequest: 0 })
      pubConn.on('error', () => {}); subConn.on('error', () => {})
      const mq = mqemitterRedis({ pubConn, subConn }); mq.state.on('error', () => {})
      await new Promise(r => setTimeout(r, 100))
      pubConn.disconnect()
      await new Promise(r => setTimeout(r, 50))
      process.on('unhandledRejection', r => console.log('unhandled: ' + r.message))
      mq.close(() => console.log('closed'))
      setTimeout(() => { console.log('end'); process.exit(0) }, 1000)`
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, URL: redisUrl() }, encoding: 'utf8' })
    expect(out.trim().split('\n')).toEqual(['unhandled: Connection is closed.', 'end'])
  })

  test('workaround: only the emitter is closed, at once; the owner quits the connections', async () => {
    const { emitter, subConn } = await emitterWithClosedConnection()
    expect(await closesWithin(emitter, 1000)).toBe(true)
    await subConn.quit()
  })
})

describe('aedes-persistence-redis 11.2.2: offline queues grow without bound (workaround 14)', () => {
  /** 50 packets queued for one session (and 3 for another) through a persistence on its own Redis database. */
  async function queueFifty (patch: boolean, db: number): Promise<{ lengths: number[], newest: string[], packets: number[] }> {
    const url = new URL(redisUrl())
    url.pathname = `/${db}`
    const conn = new Redis(url.toString())
    await conn.flushdb()
    const base = aedesPersistenceRedis({ conn, maxSessionDelivery: 20, packetTTL: () => 60 })
    const persistence = patch ? boundRedisQueues(base, conn, { max: 21, ttlSeconds: 60 }) : base
    const store = persistence as { outgoingEnqueueCombi: (subs: Array<{ clientId: string, topic: string, qos: number }>, packet: unknown) => Promise<void> }
    for (let i = 1; i <= 50; i++) {
      const subs = [{ clientId: 'u:a', topic: 't', qos: 1 }, ...(i <= 3 ? [{ clientId: 'u:b', topic: 't', qos: 1 }] : [])]
      await store.outgoingEnqueueCombi(subs, { cmd: 'publish', topic: 't', payload: Buffer.from(`m${i}`), qos: 1, retain: false, dup: false, brokerId: 'b1', brokerCounter: i })
    }
    const lengths = [await conn.llen(redisQueueKey('u:a')), await conn.llen(redisQueueKey('u:b'))]
    const newest = await conn.lrange(redisQueueKey('u:a'), -2, -1)
    // which packets are still stored (by their counter)
    const packets: number[] = []
    for (let i = 1; i <= 50; i++) if (await conn.exists(`packet:b1:${i}`) === 1) packets.push(i)
    await conn.flushdb()
    conn.disconnect()
    return { lengths, newest, packets }
  }

  const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

  test('upstream: 50 queued, 50 in the list, every packet kept', async () => {
    const { lengths, packets } = await queueFifty(false, 15)
    expect(lengths).toEqual([50, 3])
    expect(packets).toEqual(range(1, 50))
  })

  test('workaround: trimmed to the newest `max`, shorter lists untouched; a packet trimmed off is deleted unless another queue holds it', async () => {
    expect(await queueFifty(true, 15)).toEqual({
      lengths: [21, 3],
      newest: ['packet:b1:49', 'packet:b1:50'],
      // 1-3 are still in u:b's queue; 4-29 were only in u:a's
      packets: [...range(1, 3), ...range(30, 50)]
    })
  })
})

describe('workaround 14, several topics at once (the fan-out): outgoingEnqueueMany', () => {
  test('the packets of several topics queued in one script, as one by one: counted, trimmed, replayed with their own topics', async () => {
    const url = new URL(redisUrl())
    url.pathname = '/15'
    const conn = new Redis(url.toString())
    await conn.flushdb()
    try {
      const base = aedesPersistenceRedis({ conn, maxSessionDelivery: 20, packetTTL: () => 60 })
      type Sub = { clientId: string, topic: string, qos: number }
      interface Store {
        outgoingEnqueueMany: (entries: Array<{ subs: Sub[], packet: unknown }>) => Promise<void>
        outgoingStream: (client: { id: string }) => AsyncIterable<Record<string, unknown>>
      }
      const store = boundRedisQueues(base as Store, conn, { max: 3, ttlSeconds: 60 })
      const scripts: number[] = []
      const redis = conn as unknown as { mqimEnqueue: (...args: unknown[]) => Promise<number> }
      const enqueue = redis.mqimEnqueue.bind(conn)
      redis.mqimEnqueue = async (...args) => { scripts.push(args.length); return await enqueue(...args) }
      const pkt = (topic: string, counter: number): Record<string, unknown> =>
        ({ cmd: 'publish', topic, payload: Buffer.from(`${topic} ${counter}`), qos: 1, retain: false, dup: false, brokerId: 'b1', brokerCounter: counter })
      const sub = (clientId: string, topic: string): Sub => ({ clientId, topic, qos: 1 })
      // four fan-outs, each to a (two persistent devices), b (one) and c (none)
      for (let k = 0; k < 4; k++) {
        await store.outgoingEnqueueMany([
          { subs: [sub('u:a1', 'im/u/a/m'), sub('u:a2', 'im/u/a/#')], packet: pkt('im/u/a/m', 10 * k + 1) },
          { subs: [sub('u:b', 'im/u/b/m')], packet: pkt('im/u/b/m', 10 * k + 2) },
          { subs: [], packet: pkt('im/u/c/m', 10 * k + 3) }
        ])
      }
      expect(scripts).toHaveLength(4)
      // each queue keeps its newest 3; packets of the first fan-out are trimmed off everywhere and deleted
      expect(await conn.lrange(redisQueueKey('u:a1'), 0, -1)).toEqual(['packet:b1:11', 'packet:b1:21', 'packet:b1:31'])
      expect(await conn.lrange(redisQueueKey('u:a2'), 0, -1)).toEqual(['packet:b1:11', 'packet:b1:21', 'packet:b1:31'])
      expect(await conn.lrange(redisQueueKey('u:b'), 0, -1)).toEqual(['packet:b1:12', 'packet:b1:22', 'packet:b1:32'])
      expect(await conn.exists('packet:b1:1', 'packet:b1:1:offlineCount', 'packet:b1:2', 'packet:b1:3', 'packet:b1:13')).toBe(0)
      expect([await conn.get('packet:b1:31:offlineCount'), await conn.get('packet:b1:32:offlineCount')]).toEqual(['2', '1'])
      expect(await conn.ttl('packet:b1:31')).toBeGreaterThan(50)
      const replayed: Array<[unknown, string]> = []
      for await (const p of store.outgoingStream({ id: 'u:a2' })) replayed.push([p.topic, String(p.payload)])
      expect(replayed).toEqual([['im/u/a/m', 'im/u/a/m 11'], ['im/u/a/m', 'im/u/a/m 21'], ['im/u/a/m', 'im/u/a/m 31']])
      // nothing to queue: no script at all
      await store.outgoingEnqueueMany([{ subs: [], packet: pkt('im/u/c/m', 99) }])
      expect(scripts).toHaveLength(4)
      // a large audience: 1,500 packets of 3 keys each in two scripts (4,096 keys at most each), all queued
      await store.outgoingEnqueueMany(Array.from({ length: 1500 }, (_, i) => ({ subs: [sub(`big:${i}`, `im/u/big${i}/m`)], packet: pkt(`im/u/big${i}/m`, 1000 + i) })))
      expect(scripts).toHaveLength(6)
      const lengths = await Promise.all(Array.from({ length: 1500 }, async (_, i) => await conn.llen(redisQueueKey(`big:${i}`))))
      expect(lengths.every(n => n === 1)).toBe(true)
      expect(await conn.get('packet:b1:2499:offlineCount')).toBe('1')
    } finally {
      await conn.flushdb()
      conn.disconnect()
    }
  })
})

describe('aedes-persistence-redis 11.2.2: a delivery to a persistent session costs a packet write, and a packet read and four commands to acknowledge (workaround 15)', () => {
  type Store = {
    outgoingEnqueueCombi: (subs: Array<{ clientId: string, topic: string, qos: number }>, packet: unknown) => Promise<void>
    outgoingUpdate: (client: { id: string }, packet: Record<string, unknown>) => Promise<void>
    outgoingClearMessageId: (client: { id: string }, packet: { messageId: number }) => Promise<unknown>
    outgoingStream: (client: { id: string }) => AsyncIterable<Record<string, unknown>>
  }
  const packet = (counter: number): Record<string, unknown> =>
    ({ cmd: 'publish', topic: 'im/u/a/m', payload: Buffer.from(`m${counter}`), qos: 1, retain: false, dup: false, brokerId: 'b1', brokerCounter: counter })

  /**
   * Packets 1-3 queued for session u:a and sent to it (message ids 11-13), 1 and 2 acknowledged;
   * packet 4 sent live to u:a without being queued (a session that connected after the queueing)
   * and acknowledged. Then what is left in Redis, and what the persistence replays.
   */
  async function deliverAndAck (patch: boolean, db: number): Promise<Record<string, unknown>> {
    const url = new URL(redisUrl())
    url.pathname = `/${db}`
    const conn = new Redis(url.toString())
    await conn.flushdb()
    const base = aedesPersistenceRedis({ conn, maxSessionDelivery: 20, packetTTL: () => 60 })
    const store = (patch ? leanRedisAcks(boundRedisQueues(base, conn, { max: 21, ttlSeconds: 60 }), conn, { perConnection: 1024, queueMax: 21 }) : base) as Store
    const client = { id: 'u:a' }
    const acks: unknown[] = []
    for (const i of [1, 2, 3]) await store.outgoingEnqueueCombi([{ clientId: 'u:a', topic: 'im/u/a/m', qos: 1 }], packet(i))
    for (const i of [1, 2, 3]) await store.outgoingUpdate(client, { ...packet(i), messageId: 10 + i })
    for (const i of [1, 2]) acks.push(await store.outgoingClearMessageId(client, { messageId: 10 + i }))
    await store.outgoingUpdate(client, { ...packet(4), messageId: 14 })
    // whether the delivery wrote the packet (it was never queued: nothing would ever replay it)
    const liveWritten = await conn.exists(redisPacketKey('b1', 4))
    acks.push(await store.outgoingClearMessageId(client, { messageId: 14 }))
    // an id nobody sent: nothing happens
    acks.push(await store.outgoingClearMessageId(client, { messageId: 99 }))
    const keys = (await conn.keys('packet:*')).sort()
    const ttls: Record<string, number> = {}
    for (const k of keys) ttls[k] = await conn.ttl(k)
    const queue = await conn.lrange(redisQueueKey('u:a'), 0, -1)
    const replayed: Array<Record<string, unknown>> = []
    for await (const p of store.outgoingStream(client)) replayed.push({ topic: p.topic, payload: Buffer.from(p.payload as Buffer).toString(), counter: Number(p.brokerCounter), messageId: p.messageId })
    await conn.flushdb()
    conn.disconnect()
    return { acks: acks.map(a => a === undefined ? undefined : Number((a as { brokerCounter: unknown }).brokerCounter)), keys, ttls, queue, replayed, liveWritten }
  }

  test('upstream: each delivery writes the packet (with its id); each ack reads it back (returned); a live delivery leaves its packet until it expires and its count at -1 with no expiry', async () => {
    const r = await deliverAndAck(false, 15)
    expect(r.liveWritten).toBe(1)
    expect(r.acks).toEqual([1, 2, 4, undefined])
    expect(r.keys).toEqual([redisPacketKey('b1', 3), `${redisPacketKey('b1', 3)}:offlineCount`, redisPacketKey('b1', 4), `${redisPacketKey('b1', 4)}:offlineCount`])
    expect((r.ttls as Record<string, number>)[`${redisPacketKey('b1', 4)}:offlineCount`]).toBe(-1)
    expect(r.replayed).toEqual([{ topic: 'im/u/a/m', payload: 'm3', counter: 3, messageId: 13 }])
  })

  test('workaround: no write per delivery, one script per ack with no read; the same keys left for what is unacknowledged, nothing for the live delivery; the replay is the queued packet under a fresh id', async () => {
    const r = await deliverAndAck(true, 15)
    expect(r.liveWritten).toBe(0)
    expect(r.acks).toEqual([undefined, undefined, undefined, undefined])
    expect(r.keys).toEqual([redisPacketKey('b1', 3), `${redisPacketKey('b1', 3)}:offlineCount`])
    for (const ttl of Object.values(r.ttls as Record<string, number>)) expect(ttl).toBeGreaterThan(0)
    expect(r.queue).toEqual([redisPacketKey('b1', 3)])
    // the persistence's own reader reads what the script queued: packet 3, without the id it was
    // sent with on the earlier connection (Aedes gives it the new connection's next id)
    expect(r.replayed).toEqual([{ topic: 'im/u/a/m', payload: 'm3', counter: 3, messageId: null }])
  })

  /** Both workarounds on a fresh database 15, queues kept to `max` entries, `perConnection` ack keys. */
  async function patchedStore (max: number, perConnection = 1024, reports: AckReports = {}): Promise<{ conn: Redis, store: Store }> {
    const url = new URL(redisUrl())
    url.pathname = '/15'
    const conn = new Redis(url.toString())
    await conn.flushdb()
    const base = aedesPersistenceRedis({ conn, maxSessionDelivery: 20, packetTTL: () => 60 })
    return { conn, store: leanRedisAcks(boundRedisQueues(base, conn, { max, ttlSeconds: 60 }), conn, { perConnection, queueMax: max, ...reports }) as Store }
  }

  test('workaround: an ack of a packet its queue trimmed off (already released there) leaves it for the other sessions that queue it', async () => {
    const { conn, store } = await patchedStore(1)
    const sub = (clientId: string): { clientId: string, topic: string, qos: number } => ({ clientId, topic: 'im/u/a/m', qos: 1 })
    const a = { id: 'u:a' }
    await store.outgoingEnqueueCombi([sub('u:a'), sub('u:b')], packet(1))
    await store.outgoingUpdate(a, { ...packet(1), messageId: 1 }) // sent to a, not acknowledged yet
    await store.outgoingEnqueueCombi([sub('u:a')], packet(2)) // a's queue keeps 1 entry: packet 1 is trimmed off it
    await store.outgoingClearMessageId(a, { messageId: 1 }) // a acknowledges it now
    expect(await conn.get(`${redisPacketKey('b1', 1)}:offlineCount`)).toBe('1')
    const replayed: number[] = []
    for await (const p of store.outgoingStream({ id: 'u:b' })) replayed.push(Number(p.brokerCounter))
    expect(replayed).toEqual([1])
    await conn.flushdb()
    conn.disconnect()
  })

  test('workaround: kept per connection: a later connection of the session acknowledging an id it was not sent releases nothing the earlier one was sent', async () => {
    const { conn, store } = await patchedStore(21)
    const sub = { clientId: 'u:a', topic: 'im/u/a/m', qos: 1 }
    for (const i of [1, 2]) await store.outgoingEnqueueCombi([sub], packet(i))
    // the first connection is sent packet 1 as id 7 and ends before acknowledging it
    await store.outgoingUpdate({ id: 'u:a' }, { ...packet(1), messageId: 7 })
    // the next connection of the session is sent packet 2 as id 8, and acknowledges 7 and 8
    const next = { id: 'u:a' }
    await store.outgoingUpdate(next, { ...packet(2), messageId: 8 })
    await store.outgoingClearMessageId(next, { messageId: 7 })
    await store.outgoingClearMessageId(next, { messageId: 8 })
    // packet 1 is still queued (replayed on the next reconnect), packet 2 is released
    expect(await conn.lrange(redisQueueKey('u:a'), 0, -1)).toEqual([redisPacketKey('b1', 1)])
    expect(await conn.exists(redisPacketKey('b1', 1))).toBe(1)
    expect(await conn.exists(redisPacketKey('b1', 2))).toBe(0)
    await conn.flushdb()
    conn.disconnect()
  })

  test('workaround: a connection keeps at most `perConnection` keys, the oldest forgotten first; acknowledging a forgotten one releases nothing (the message stays queued)', async () => {
    const { conn, store } = await patchedStore(21, 3)
    const sub = { clientId: 'u:a', topic: 'im/u/a/m', qos: 1 }
    for (const i of [1, 2, 3, 4]) await store.outgoingEnqueueCombi([sub], packet(i))
    const a = { id: 'u:a' }
    // a client that does not acknowledge: four deliveries, three keys kept (1 forgotten)
    for (const i of [1, 2, 3, 4]) await store.outgoingUpdate(a, { ...packet(i), messageId: i })
    for (const i of [1, 2, 3, 4]) await store.outgoingClearMessageId(a, { messageId: i })
    expect(await conn.lrange(redisQueueKey('u:a'), 0, -1)).toEqual([redisPacketKey('b1', 1)])
    expect(await conn.exists(redisPacketKey('b1', 1))).toBe(1)
    for (const i of [2, 3, 4]) expect(await conn.exists(redisPacketKey('b1', i))).toBe(0)
    await conn.flushdb()
    conn.disconnect()
  })

  /** Counts the acknowledgement scripts sent (their sizes), or fails them with `fail`. */
  function watchAckScripts (conn: Redis): { sizes: number[], fail: (err: Error | null) => void } {
    const target = conn as unknown as { mqimAcks: (...args: unknown[]) => Promise<number> }
    const original = target.mqimAcks.bind(conn)
    const sizes: number[] = []
    let failure: Error | null = null
    target.mqimAcks = async (...args) => {
      sizes.push((args[0] as number) / 3)
      if (failure !== null) throw failure
      return await original(...args)
    }
    return { sizes, fail: (err) => { failure = err } }
  }

  test('workaround: the acknowledgements of one turn of the event loop are released by one script; each settles with it; a failed script fails no connection, its releases are run again after the next script that succeeds', async () => {
    const failures: Array<[string, number]> = []
    const retried: number[] = []
    const { conn, store } = await patchedStore(21, 4096, { onFailure: (err, acks) => { failures.push([(err as Error).message, acks]) }, onRetried: (acks) => { retried.push(acks) } })
    const scripts = watchAckScripts(conn)
    const first = { id: 'u:a' }
    const clients = [first, { id: 'u:b' }, { id: 'u:c' }]
    for (const [n, client] of clients.entries()) {
      for (const i of [1, 2, 3]) {
        await store.outgoingEnqueueCombi([{ clientId: client.id, topic: 'im/u/a/m', qos: 1 }], packet(10 * n + i))
        await store.outgoingUpdate(client, { ...packet(10 * n + i), messageId: i })
      }
    }
    // six in one turn: one script, and each released
    await Promise.all(clients.flatMap(client => [1, 2].map(async i => await store.outgoingClearMessageId(client, { messageId: i }))))
    expect(scripts.sizes).toEqual([6])
    for (const [n, client] of clients.entries()) expect(await conn.lrange(redisQueueKey(client.id), 0, -1)).toEqual([redisPacketKey('b1', 10 * n + 3)])
    expect((await conn.keys('packet:*')).filter(k => !k.endsWith(':offlineCount')).sort()).toEqual([3, 13, 23].map(c => redisPacketKey('b1', c)).sort())
    // a failing script: each acknowledgement settles without an error (Aedes keeps those clients
    // connected), the messages stay queued for now, the failure is reported once
    scripts.fail(new Error('redis went away'))
    const settled = await Promise.allSettled(clients.map(async client => await store.outgoingClearMessageId(client, { messageId: 3 })))
    expect(settled.map(r => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled'])
    expect(scripts.sizes).toEqual([6, 3])
    expect(failures).toEqual([['redis went away', 3]])
    for (const [n, client] of clients.entries()) expect(await conn.lrange(redisQueueKey(client.id), 0, -1)).toEqual([redisPacketKey('b1', 10 * n + 3)])
    // (the id is forgotten with its acknowledgement: the same PUBACK again goes to the persistence's own code, which finds nothing)
    expect(await store.outgoingClearMessageId(first, { messageId: 3 })).toBeUndefined()
    expect(scripts.sizes).toEqual([6, 3])
    // Redis answers again: the next script that succeeds is followed by the kept releases, and those messages leave their queues
    scripts.fail(null)
    const later = { id: 'u:later' }
    await store.outgoingEnqueueCombi([{ clientId: later.id, topic: 'im/u/later/m', qos: 1 }], packet(40))
    await store.outgoingUpdate(later, { ...packet(40), messageId: 1 })
    await store.outgoingClearMessageId(later, { messageId: 1 })
    await waitUntil(() => retried.length > 0, 5000, 'the kept releases run again')
    expect(retried).toEqual([3])
    expect(scripts.sizes).toEqual([6, 3, 1, 3])
    for (const client of [...clients, later]) expect(await conn.lrange(redisQueueKey(client.id), 0, -1)).toEqual([])
    expect((await conn.keys('packet:*')).filter(k => !k.endsWith(':offlineCount'))).toEqual([])
    // a release the persistence's own code makes (an id this connection's map does not have) fails no connection either
    const ownFailures: number[] = []
    const failingOwn = leanRedisAcks({
      outgoingUpdate: async (_c: object, _p: object) => {},
      outgoingClearMessageId: async (_c: object, _p: object): Promise<unknown> => { throw new Error('redis went away') }
    }, conn, { perConnection: 16, queueMax: 21, onFailure: (_err, acks) => { ownFailures.push(acks) } })
    await expect(failingOwn.outgoingClearMessageId({ id: 'u:stranger' }, { messageId: 7 })).resolves.toBeUndefined()
    expect(ownFailures).toEqual([1])
    // kept releases also run again when the connection is ready again (after a reconnect), with no other script
    scripts.fail(new Error('redis went away'))
    await store.outgoingEnqueueCombi([{ clientId: later.id, topic: 'im/u/later/m', qos: 1 }], packet(41))
    await store.outgoingUpdate(later, { ...packet(41), messageId: 2 })
    await store.outgoingClearMessageId(later, { messageId: 2 })
    expect(await conn.lrange(redisQueueKey(later.id), 0, -1)).toEqual([redisPacketKey('b1', 41)])
    scripts.fail(null)
    conn.emit('ready')
    await waitUntil(() => retried.length > 1, 5000, 'the kept release runs again on ready')
    expect(retried).toEqual([3, 1])
    expect(await conn.lrange(redisQueueKey(later.id), 0, -1)).toEqual([])
    // more than a script takes in one turn: several scripts, every one settled
    scripts.fail(null)
    const many = { id: 'u:many' }
    for (let i = 1; i <= 2500; i++) await store.outgoingUpdate(many, { ...packet(1000 + i), messageId: i % 65536 })
    await Promise.all(Array.from({ length: 2500 }, async (_, i) => await store.outgoingClearMessageId(many, { messageId: (i + 1) % 65536 })))
    expect(scripts.sizes).toEqual([6, 3, 1, 3, 1, 1, 1000, 1000, 500])
    // a script walks about a million queue entries at most: fewer acknowledgements per script for longer queues
    expect([1, 21, 100, 1000, 10_000, 100_000, 10_000_000].map(acksPerScript)).toEqual([1000, 1000, 1000, 1000, 100, 16, 16])
    await conn.flushdb()
    conn.disconnect()
  })
})

describe('mqemitter-redis 7.2.1: a message on its channels that is not one of its own kills the process (workaround 16)', () => {
  interface Packet { topic: string, payload: Buffer, qos: number, brokerId: string, brokerCounter: number, messageId?: number | null, retain: boolean }
  interface Mq {
    on: (topic: string, cb: (msg: Packet, done: () => void) => void, ready: () => void) => void
    emit: (msg: Packet, done?: (err?: Error) => void) => void
    state: NodeJS.EventEmitter
    subConn: Redis
    pubConn: Redis
    close: (cb: () => void) => void
  }
  const opened: Redis[] = []
  function emitter (patch: boolean, undecodable: string[] = []): Mq {
    const pubConn = new Redis(redisUrl())
    const subConn = new Redis(redisUrl())
    opened.push(pubConn, subConn)
    const mq = mqemitterRedis({ pubConn, subConn } as unknown as Parameters<typeof mqemitterRedis>[0]) as unknown as Mq
    closeEmitterQuietly(mq)
    return patch ? guardEmitterDecode(mq, (err, topic) => { undecodable.push(`${topic}: ${err.message}`) }) : mq
  }
  async function listen (mq: Mq, filter: string, into: Packet[]): Promise<void> {
    await new Promise<void>(resolve => { mq.on(filter, (msg, done) => { into.push(msg); done() }, resolve) })
  }
  const packet = (n: number, messageId?: number): Packet =>
    ({ topic: `t16/x/${n}`, payload: Buffer.from(`{"n":${n},"s":"h\u00e9 ✓"}`), qos: 1, retain: false, brokerId: 'b-16', brokerCounter: 2 ** 40 + n, ...(messageId === undefined ? {} : { messageId }) })
  const until = async (check: () => boolean): Promise<void> => {
    for (let i = 0; i < 200 && !check(); i++) await new Promise(resolve => setTimeout(resolve, 10))
  }
  afterAll(async () => { await Promise.all(opened.map(async c => { await c.quit().catch(() => {}) })) })

  test('upstream: a message on a subscribed channel that is not msgpack throws out of the subscriber connection (an uncaught exception)', () => {
    const script = `
      import { Redis } from 'ioredis'
      import mqemitterRedis from 'mqemitter-redis'
      const pubConn = new Redis(process.env.URL), subConn = new Redis(process.env.URL)
      const mq = mqemitterRedis({ pubConn, subConn }); mq.state.on('error', () => {})
      process.on('uncaughtException', (e) => { console.log('uncaught'); process.exit(0) })
      await new Promise(r => mq.on('t16/+', (m, cb) => { console.log('delivered'); cb() }, r))
      await pubConn.publish('t16/x', Buffer.from(process.env.BODY))
      setTimeout(() => { console.log('end'); process.exit(0) }, 1000)`
    for (const body of ['hello', '\u0092']) {
      const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, URL: redisUrl(), BODY: body }, encoding: 'utf8' })
      expect(out.trim()).toBe('uncaught')
    }
  })

  test('workaround: a patched node and a stock one read each other\'s messages unchanged, both ways', async () => {
    const stock = emitter(false)
    const patched = emitter(true)
    const atStock: Packet[] = []
    const atPatched: Packet[] = []
    await listen(stock, 't16/x/+', atStock)
    await listen(patched, 't16/x/+', atPatched)
    patched.emit(packet(1))
    stock.emit(packet(2, 7))
    await until(() => atStock.length === 2 && atPatched.length === 2)
    const seen = (list: Packet[]): unknown[] => list.map(p => ({ ...p, payload: Buffer.isBuffer(p.payload) ? p.payload.toString('utf8') : p.payload })).sort((a, b) => a.brokerCounter - b.brokerCounter)
    const want = [
      { ...packet(1), payload: packet(1).payload.toString('utf8') },
      { ...packet(2, 7), payload: packet(2, 7).payload.toString('utf8') }
    ]
    expect(seen(atStock)).toEqual(want)
    expect(seen(atPatched)).toEqual(want)
    // an undefined field is written as nil by both (Aedes' packets carry some)
    const withUndefined = { ...packet(3), messageId: undefined } as unknown as Packet
    patched.emit(withUndefined)
    stock.emit({ ...withUndefined, brokerCounter: 4 })
    await until(() => atStock.length === 4 && atPatched.length === 4)
    for (const p of [...atStock.slice(2), ...atPatched.slice(2)]) expect(p.messageId).toBeNull()
  })

  test('workaround: a message that does not decode is dropped and reported, the next one is delivered, once to each listener although Redis sends it once per matching subscription', async () => {
    const undecodable: string[] = []
    const patched = emitter(true, undecodable)
    const got: Packet[] = []
    await listen(patched, 't16/y/+', got)
    await listen(patched, 't16/y/exact', got)
    const raw = opened[opened.length - 2] as Redis
    await raw.publish('t16/y/exact', Buffer.from('hello'))
    await raw.publish('t16/y/exact', Buffer.from([0x92]))
    // well-formed, but its topic has more levels than the emitter's matcher takes (it throws)
    await raw.publish('t16/y/exact', msgpack.encode({ id: 'deep', msg: { ...packet(6), topic: 'd/'.repeat(150) + 'd' } }))
    patched.emit({ ...packet(5), topic: 't16/y/exact' })
    await until(() => got.length >= 2)
    await new Promise(resolve => setTimeout(resolve, 100))
    // Redis sent it twice (the pattern and the channel matched): emitted once, to each of the two listeners
    expect(got.map(p => p.brokerCounter)).toEqual([2 ** 40 + 5, 2 ** 40 + 5])
    // each bad message came through both Redis subscriptions; the deep one is reported once (the
    // second copy has its id seen already)
    expect(undecodable).toHaveLength(5)
    expect(undecodable.every(u => u.startsWith('t16/y/exact: '))).toBe(true)
    expect(undecodable.filter(u => u.includes('too many words'))).toHaveLength(1)
  })

  test('workaround: an emitter whose subscriber connection has other listeners than the one expected is refused (the package changed)', () => {
    const mq = emitter(false)
    mq.subConn.on('messageBuffer', () => {})
    expect(() => guardEmitterDecode(mq, () => {})).toThrow(/expected one 'messageBuffer' listener/)
  })
})

describe('mqemitter-redis 7.2.1: its channels ignore the Redis database (workaround 20)', () => {
  const opened: Redis[] = []
  afterAll(async () => { await Promise.all(opened.map(async c => { await c.quit().catch(() => {}) })) })
  const on = (db: number): { url: string } => {
    const url = new URL(redisUrl())
    url.pathname = `/${db}`
    return { url: url.toString() }
  }
  /** An emitter on database `db`, scoped or stock, and what its listener on `t20/#` receives. */
  async function emitterOn (db: number, scoped: boolean): Promise<{ mq: { emit: (msg: object, done: (err?: Error) => void) => void }, got: string[] }> {
    const pubConn = new Redis(on(db).url)
    const subConn = new Redis(on(db).url)
    opened.push(pubConn, subConn)
    const stock = mqemitterRedis({ pubConn, subConn, matchEmptyLevels: true } as unknown as Parameters<typeof mqemitterRedis>[0])
    closeEmitterQuietly(stock)
    const mq = (scoped ? scopeChannelsToDatabase(stock, db) : stock) as unknown as { emit: (msg: object, done: (err?: Error) => void) => void, on: (topic: string, notify: (msg: { topic: string }, done: () => void) => void, ready: () => void) => void }
    const got: string[] = []
    await new Promise<void>(resolve => { mq.on('t20/#', (msg, done) => { got.push(msg.topic); done() }, resolve) })
    return { mq, got }
  }
  /** Up to 2 s for `got` to hold `n` (the assertions after say what it holds). */
  const settle = async (got: string[], n: number): Promise<void> => { await waitUntil(() => got.length >= n, 2000).catch(() => {}) }

  test('upstream: two emitters on different databases hear each other', async () => {
    const a = await emitterOn(19, false)
    const b = await emitterOn(20, false)
    a.mq.emit({ topic: 't20/stock' }, () => {})
    await settle(b.got, 1)
    expect(b.got).toStrictEqual(['t20/stock'])
  })

  test('workaround: scoped, they hear only their own database (0 stays as the stock emitter names it)', async () => {
    const a = await emitterOn(19, true)
    const b = await emitterOn(20, true)
    const zero = await emitterOn(0, true)
    const stockZero = await emitterOn(0, false)
    const sent = async (mq: { emit: (msg: object, done: (err?: Error) => void) => void }, topic: string): Promise<void> => {
      await new Promise<void>((resolve, reject) => { mq.emit({ topic }, err => { if (err === undefined || err === null) resolve(); else reject(err) }) })
    }
    for (const [e, topic] of [[a, 't20/a'], [b, 't20/b'], [zero, 't20/zero']] as const) await sent(e.mq, topic)
    // then a fence of each on its own channel: Redis pushed the three to their subscribers before it
    for (const [e, topic] of [[a, 't20/a-fence'], [b, 't20/b-fence'], [zero, 't20/zero-fence']] as const) await sent(e.mq, topic)
    await settle(a.got, 2)
    await settle(b.got, 2)
    await settle(zero.got, 2)
    await settle(stockZero.got, 2)
    expect(a.got).toStrictEqual(['t20/a', 't20/a-fence'])
    expect(b.got).toStrictEqual(['t20/b', 't20/b-fence'])
    expect(zero.got).toStrictEqual(['t20/zero', 't20/zero-fence'])
    expect(stockZero.got).toStrictEqual(['t20/zero', 't20/zero-fence'])
  })
})
