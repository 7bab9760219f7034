/**
 * Redis refusing work, on a Redis server of this file's own (test/helpers/private-redis.ts): a
 * memory limit reached, writes refused. What must hold:
 *
 * - Out of memory (maxmemory with noeviction), a queueing script is refused whole (nothing of it
 *   written), and an acknowledgement script still releases everything it is given: Redis stops a
 *   script for memory only at a command that may grow memory made before the script's first write,
 *   and the release's first write is an LREM (which does not); its DECRBY comes after it.
 * - Through Aedes (the real broker with createBrokerBackends' Redis persistence, a real mqtt.js
 *   client over TCP): a PUBACK whose release Redis refuses costs the client nothing; with the
 *   stock persistence, Aedes closes the connection (workaround 15, src/broker/upstream.ts).
 * - Wills (workaround 21): none stored or deleted at connect and close, none handed to Aedes'
 *   sweep (which would authorize one as a publish of the device connected under its client id),
 *   stale ones deleted; the stock persistence's behaviour alongside.
 * - A maxmemory-policy that evicts is warned about (checkEvictionPolicy).
 * - /healthz reports a Redis that answers but refuses writes ("refuses writes"), which a PING
 *   would call healthy.
 */
import { execFileSync } from 'node:child_process'
import net from 'node:net'
import { Aedes } from 'aedes'
import aedesPersistenceRedis from 'aedes-persistence-redis'
import mqtt, { type MqttClient } from 'mqtt'
import { Redis } from 'ioredis'
import msgpack from 'msgpack-lite'
import { boundRedisQueues, leanRedisAcks, noRedisWills, redisPacketKey, redisQueueKey } from '../src/broker/upstream.js'
import { checkEvictionPolicy, createBrokerBackends } from '../src/broker/backends.js'
import { checkHealth, sharedCheck } from '../src/http/health.js'
import { RedisUploadQuota } from '../src/files/quota.js'
import { isStoreUnavailable } from '../src/store/errors.js'
import { MemoryMessageStore } from '../src/store/messages-memory.js'
import { MemoryMetadataStore } from '../src/store/metadata-memory.js'
import { recordingLogger } from './helpers/recording-logger.js'
import { sleep, waitUntil } from '../scripts/lib/procs.js'
import { startPrivateRedis, type PrivateRedis } from './helpers/private-redis.js'

let redis: PrivateRedis | undefined
beforeAll(async () => { redis = await startPrivateRedis() })
afterAll(async () => { await redis?.stop() })
/** What a test opened, closed after it whatever its outcome. */
const opened: Array<Redis | MqttClient> = []
function track<T extends Redis | MqttClient> (c: T): T {
  opened.push(c)
  return c
}
afterEach(async () => {
  for (const c of opened.splice(0)) {
    if (c instanceof Redis) c.disconnect()
    else c.end(true)
  }
  if (redis === undefined) return
  await redis.admin.config('SET', 'maxmemory', '0')
  await redis.admin.config('SET', 'min-replicas-to-write', '0')
  await redis.admin.config('SET', 'maxmemory-policy', 'noeviction')
  await redis.admin.flushall()
})
/** The private Redis (started in beforeAll). */
function r (): PrivateRedis {
  if (redis === undefined) throw new Error('the private Redis did not start')
  return redis
}

type Store = {
  outgoingEnqueueCombi: (subs: Array<{ clientId: string, topic: string, qos: number }>, packet: unknown) => Promise<void>
  outgoingUpdate: (client: { id: string }, packet: Record<string, unknown>) => Promise<void>
  outgoingClearMessageId: (client: { id: string }, packet: { messageId: number }) => Promise<unknown>
}
const packet = (counter: number): Record<string, unknown> =>
  ({ cmd: 'publish', topic: 'im/u/a/m', payload: Buffer.from(`m${counter}`), qos: 1, retain: false, dup: false, brokerId: 'b1', brokerCounter: counter })
const sub = { clientId: 'u:a', topic: 'im/u/a/m', qos: 1 }

/** Sets maxmemory below what Redis holds now: every command that may grow memory is refused. */
async function outOfMemory (admin: Redis): Promise<void> {
  const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1])
  expect(used).toBeGreaterThan(0)
  await admin.config('SET', 'maxmemory', String(Math.floor(used / 2)))
  await expect(admin.set('probe', 'x')).rejects.toThrow(/^OOM /)
}

describe('out of memory', () => {
  test('a queueing script is refused whole; acknowledgements are still released completely', async () => {
    const conn = track(new Redis(r().url))
    const failures: string[] = []
    const store = leanRedisAcks(boundRedisQueues(aedesPersistenceRedis({ conn, maxSessionDelivery: 20, packetTTL: () => 60 }), conn, { max: 21, ttlSeconds: 60 }), conn,
      { perConnection: 1024, queueMax: 21, onFailure: (err) => { failures.push((err as Error).message) } }) as Store
    const a = { id: 'u:a' }
    for (const i of [1, 2, 3]) {
      await store.outgoingEnqueueCombi([sub], packet(i))
      await store.outgoingUpdate(a, { ...packet(i), messageId: i })
    }
    await outOfMemory(r().admin)

    await expect(store.outgoingEnqueueCombi([sub, { ...sub, clientId: 'u:b' }], packet(4))).rejects.toThrow(/OOM/)
    expect(await r().admin.exists(redisPacketKey('b1', 4), `${redisPacketKey('b1', 4)}:offlineCount`, redisQueueKey('u:b'))).toBe(0)
    expect(await r().admin.lrange(redisQueueKey('u:a'), 0, -1)).toEqual([1, 2, 3].map(i => redisPacketKey('b1', i)))

    // 1 and 2 in one script, 3 in the next: every release done, nothing failed
    await Promise.all([1, 2].map(async i => await store.outgoingClearMessageId(a, { messageId: i })))
    await store.outgoingClearMessageId(a, { messageId: 3 })
    expect(failures).toEqual([])
    expect(await r().admin.exists(redisQueueKey('u:a'))).toBe(0)
    expect(await r().admin.keys('packet:*')).toEqual([])
    // still out of memory
    await expect(r().admin.set('probe', 'x')).rejects.toThrow(/^OOM /)
    conn.disconnect()
  })
})

describe('maxmemory-policy', () => {
  const evicts = (lines: Array<Record<string, unknown>>): unknown[] => lines.filter(l => typeof l.msg === 'string' && l.msg.startsWith('Redis evicts keys')).map(l => l.maxmemoryPolicy)

  test('anything but noeviction is warned about at start; noeviction is not; an unreadable one is left alone', async () => {
    const quiet = recordingLogger('info')
    expect(await checkEvictionPolicy(r().admin, quiet.logger)).toBe('noeviction')
    expect(evicts(quiet.lines)).toEqual([])
    await r().admin.config('SET', 'maxmemory-policy', 'volatile-lru')
    const warned = recordingLogger('info')
    expect(await checkEvictionPolicy(r().admin, warned.logger)).toBe('volatile-lru')
    expect(evicts(warned.lines)).toEqual(['volatile-lru'])
    const gone = new Redis(r().url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false })
    gone.on('error', () => {})
    expect(await checkEvictionPolicy(gone, warned.logger)).toBeNull()
    gone.disconnect()
    // wired into the cluster backends
    await r().admin.config('SET', 'maxmemory-policy', 'allkeys-lru')
    const started = recordingLogger('info')
    const backends = createBrokerBackends({ adapter: 'redis', url: r().url, packetTTLSeconds: 60, maxSessionDelivery: 100, watchersListMs: 10_000, socketTimeoutMs: 10_000 }, { sessionQueueMessages: 100, sessionQueueBytes: 1 << 20 }, started.logger)
    try {
      await waitUntil(() => evicts(started.lines).length > 0, 10_000, 'the warning')
      expect(evicts(started.lines)).toEqual(['allkeys-lru'])
    } finally {
      await backends.close()
    }
  })
})

describe('/healthz (checkHealth) on a Redis that refuses writes', () => {
  const health = async (conn: Redis): Promise<{ ok: boolean, body: Record<string, unknown> }> =>
    await checkHealth({ meta: new MemoryMetadataStore(), messages: new MemoryMessageStore(), redis: conn, node: 'n1' }, { node: 'n1' })

  test('ok while it writes; degraded, "refuses writes", when it answers but will not write (NOREPLICAS, OOM); the probe key expires', async () => {
    const conn = track(new Redis(r().url))
    await conn.ping()
    expect(await health(conn)).toEqual({ ok: true, body: { status: 'ok', node: 'n1', checks: { messageStore: 'ok', metadataStore: 'ok', redis: 'ok' } } })
    const ttl = await r().admin.pttl('mqim:health:n1')
    expect(ttl).toBeGreaterThan(50_000)
    expect(ttl).toBeLessThanOrEqual(60_000)
    // a PING still answers: a probe that pinged would call this healthy
    await r().admin.config('SET', 'min-replicas-to-write', '1')
    expect(await conn.ping()).toBe('PONG')
    expect(await health(conn)).toEqual({ ok: false, body: { status: 'degraded', node: 'n1', checks: { messageStore: 'ok', metadataStore: 'ok', redis: 'refuses writes' } } })
    await r().admin.config('SET', 'min-replicas-to-write', '0')
    expect((await health(conn)).ok).toBe(true)
    await outOfMemory(r().admin)
    expect((await health(conn)).body.checks).toMatchObject({ redis: 'refuses writes' })
    // not reachable at all: down
    conn.disconnect()
    const gone = track(new Redis(r().url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false }))
    gone.on('error', () => {})
    expect((await health(gone)).body.checks).toMatchObject({ redis: 'down' })
  })

  test('down at once, with nothing left queued, when not connected or when the broker\'s routing connections are down; down at the 2 s deadline when Redis does not answer', async () => {
    // not connected (nothing listens there): no probe waits in the offline queue for 2 s
    const closed = track(new Redis({ port: 1, lazyConnect: true, retryStrategy: () => null }))
    closed.on('error', () => {})
    let t0 = performance.now()
    expect((await health(closed)).body.checks).toMatchObject({ redis: 'down' })
    expect(performance.now() - t0).toBeLessThan(1000)
    // connected, but the broker's routing is down (sends refused): down
    const conn = track(new Redis(r().url))
    await conn.ping()
    let routing = false
    const deps = { meta: new MemoryMetadataStore(), messages: new MemoryMessageStore(), redis: conn, node: 'n1', redisRouting: () => routing }
    expect((await checkHealth(deps, {})).body.checks).toMatchObject({ redis: 'down' })
    routing = true
    expect((await checkHealth(deps, {})).body.checks).toMatchObject({ redis: 'ok' })
    // Redis frozen (SIGSTOP): the probe's SET gets no answer; down at the deadline
    process.kill(r().pid, 'SIGSTOP')
    try {
      t0 = performance.now()
      expect((await checkHealth(deps, {})).body.checks).toMatchObject({ redis: 'down' })
      expect(performance.now() - t0).toBeGreaterThanOrEqual(1900)
    } finally {
      process.kill(r().pid, 'SIGCONT')
    }
    expect((await checkHealth(deps, {})).body.checks).toMatchObject({ redis: 'ok' })
  })

  test('/healthz asked by anyone, as often as they like: one probe for requests at once, its result reused for a second', async () => {
    const conn = track(new Redis(r().url))
    await conn.ping()
    let clock = 0
    const shared = sharedCheck(async () => await checkHealth({ meta: new MemoryMetadataStore(), messages: new MemoryMessageStore(), redis: conn, node: 'n1' }, {}), 1000, () => clock)
    await r().admin.config('RESETSTAT')
    const answers = await Promise.all(Array.from({ length: 50 }, async () => await shared()))
    expect(new Set(answers.map(a => a.body.status))).toEqual(new Set(['ok']))
    clock = 999
    await shared()
    // (SETs run, and refused: Redis counts a refused one apart)
    const sets = async (): Promise<number> => {
      const line = /cmdstat_set:(\S+)/.exec(await r().admin.info('commandstats'))?.[1] ?? ''
      return Number(/\bcalls=(\d+)/.exec(line)?.[1] ?? 0) + Number(/rejected_calls=(\d+)/.exec(line)?.[1] ?? 0)
    }
    expect(await sets()).toBe(1)
    // a second on: asked again, and its outcome seen (writes refused now)
    await r().admin.config('SET', 'min-replicas-to-write', '1')
    clock = 1000
    expect((await shared()).body.checks).toMatchObject({ redis: 'refuses writes' })
    expect(await sets()).toBe(2)
  })
})

interface Rig { broker: Aedes, port: number, close: () => Promise<void> }

async function broker (persistence: unknown, mq: unknown, close: () => Promise<void>): Promise<Rig> {
  const b = await Aedes.createBroker({ id: 'refusals', persistence: persistence as never, ...(mq === undefined ? {} : { mq: mq as never }) })
  const server = net.createServer(b.handle as (socket: net.Socket) => void)
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    broker: b,
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      // (the broker first: it ends its clients' connections, which the listener's close waits for)
      await new Promise<void>(resolve => b.close(() => resolve()))
      await new Promise<void>(resolve => server.close(() => resolve()))
      await close()
    }
  }
}

/**
 * A persistent session subscribed at QoS 1 is sent a message; Redis refuses writes
 * (min-replicas-to-write) before its PUBACK goes. What became of the connection, and whether it
 * still receives once Redis takes writes again.
 */
async function refusedPuback (rig: Rig, decided: (closes: number) => boolean): Promise<{ closes: number, connects: number, received: string[], connectedAfter: boolean }> {
  const received: string[] = []
  let refuse = true
  const client: MqttClient = track(mqtt.connect(`mqtt://127.0.0.1:${rig.port}`, { clientId: 'u:a', clean: false, reconnectPeriod: 1500 }))
  client.on('message', (_topic, message) => { received.push(message.toString()) })
  // (mqtt.js sends a PUBACK when its handleMessage calls back: writes are refused before the first)
  client.handleMessage = (_packet, done) => {
    if (!refuse) {
      done()
      return
    }
    refuse = false
    void r().admin.config('SET', 'min-replicas-to-write', '1').then(() => done())
  }
  let closes = 0
  let connects = 0
  client.on('close', () => { closes++ })
  client.on('connect', () => { connects++ })
  client.on('error', () => {})
  await waitUntil(() => connects === 1, 10_000, 'connected')
  await client.subscribeAsync('t/a', { qos: 1 })
  await new Promise<void>((resolve, reject) => rig.broker.publish({ cmd: 'publish', topic: 't/a', payload: Buffer.from('one'), qos: 1, retain: false, dup: false }, err => err == null ? resolve() : reject(err)))
  await waitUntil(() => received.length === 1, 10_000, 'the first message')
  // the PUBACK went with writes refused: until the release has failed and Aedes has acted on it (a
  // client it disconnected comes back after the refusal ends: a connect with writes refused leaves
  // stray rejections of the stock persistence's will handling, which jest counts as failures)
  await waitUntil(() => decided(closes), 10_000, 'the failed release acted on')
  const connectedAfter = client.connected && closes === 0
  await r().admin.config('SET', 'min-replicas-to-write', '0')
  await waitUntil(() => client.connected, 10_000, 'connected again')
  await new Promise<void>((resolve, reject) => rig.broker.publish({ cmd: 'publish', topic: 't/a', payload: Buffer.from('two'), qos: 1, retain: false, dup: false }, err => err == null ? resolve() : reject(err)))
  await waitUntil(() => received.includes('two'), 10_000, 'the second message')
  const counted = { closes, connects }
  await client.endAsync()
  return { ...counted, received, connectedAfter }
}

describe('a PUBACK whose release Redis refuses (writes refused: NOREPLICAS)', () => {
  test('upstream: with the stock persistence Aedes closes the client\'s connection', async () => {
    const conn = track(new Redis(r().url))
    // (Aedes' own in-process emitter: one broker)
    const rig = await broker(aedesPersistenceRedis({ conn, maxSessionDelivery: 20, packetTTL: () => 60 }), undefined, async () => { conn.disconnect() })
    try {
      const res = await refusedPuback(rig, closes => closes >= 1)
      expect(res.connectedAfter).toBe(false)
      expect(res.closes).toBeGreaterThanOrEqual(1)
      expect(res.connects).toBeGreaterThanOrEqual(2)
    } finally {
      await rig.close()
    }
  })

  test('workaround: with createBrokerBackends\' persistence the connection stays; the release is kept, reported, and done once Redis takes writes again', async () => {
    const { lines, logger } = recordingLogger('info')
    const backends = createBrokerBackends({ adapter: 'redis', url: r().url, packetTTLSeconds: 60, maxSessionDelivery: 100, watchersListMs: 10_000, socketTimeoutMs: 10_000 }, { sessionQueueMessages: 100, sessionQueueBytes: 1 << 20 }, logger)
    const rig = await broker(backends.persistence, backends.mq, async () => { await backends.close() })
    try {
      const res = await refusedPuback(rig, () => lines.some(l => typeof l.msg === 'string' && l.msg.startsWith('acknowledgements not released in Redis')))
      expect(res.connectedAfter).toBe(true)
      expect(res.closes).toBe(0)
      expect(res.connects).toBe(1)
      expect(res.received).toEqual(['one', 'two'])
      const warned = lines.find(l => typeof l.msg === 'string' && l.msg.startsWith('acknowledgements not released in Redis'))
      expect(warned).toMatchObject({ acks: 1, err: expect.stringMatching(/NOREPLICAS/) })
      // the kept release runs after the second PUBACK's script: nothing of u:a left queued
      await waitUntil(() => lines.some(l => l.msg === 'acknowledgements that had failed in Redis released'), 10_000, 'the kept release done')
      expect(lines.find(l => l.msg === 'acknowledgements that had failed in Redis released')).toMatchObject({ acks: 1 })
      await waitUntil(async () => await r().admin.llen(redisQueueKey('u:a')) === 0, 10_000, 'u:a\'s queue empty')
      expect((await r().admin.keys('packet:*')).filter(k => !k.endsWith(':offlineCount'))).toEqual([])
    } finally {
      await rig.close()
    }
  })
})

describe('wills (workaround 21): mqim never publishes one, and stores none', () => {
  /** Connects u:w with a will and a persistent session: whether it connected within 5 s. */
  async function connectWithWill (rig: Rig): Promise<{ connected: boolean, client: MqttClient }> {
    const client = track(mqtt.connect(`mqtt://127.0.0.1:${rig.port}`, { clientId: 'u:w', clean: false, reconnectPeriod: 0, connectTimeout: 3000, will: { topic: 'im/req/x', payload: Buffer.from('gone'), qos: 1, retain: false } }))
    client.on('error', () => {})
    const connected = await new Promise<boolean>(resolve => {
      const timer = setTimeout(() => resolve(false), 5000)
      client.once('connect', () => { clearTimeout(timer); resolve(true) })
      client.once('close', () => { clearTimeout(timer); resolve(false) })
    })
    return { connected, client }
  }
  const willKeys = async (): Promise<string[]> => (await r().admin.keys('will*')).sort()

  test('upstream: the stock persistence stores the will at connect; with writes refused, the connect fails and leaves unhandled rejections', async () => {
    const conn = track(new Redis(r().url))
    const rig = await broker(aedesPersistenceRedis({ conn, maxSessionDelivery: 20, packetTTL: () => 60 }), undefined, async () => { conn.disconnect() })
    try {
      const { connected, client } = await connectWithWill(rig)
      expect(connected).toBe(true)
      expect(await willKeys()).toEqual(['will', 'will:refusals:u%3Aw'])
      await client.endAsync()
    } finally {
      await rig.close()
    }
    // with writes refused, in a child process (its unhandled rejections are what is looked at)
    await r().admin.flushall()
    await r().admin.config('SET', 'min-replicas-to-write', '1')
    const script = `
      import net from 'node:net'
      import { Aedes } from 'aedes'
      import aedesPersistenceRedis from 'aedes-persistence-redis'
      import mqtt from 'mqtt'
      import { Redis } from 'ioredis'
      const unhandled = []
      process.on('unhandledRejection', r => unhandled.push(String(r.message).split(' ')[0]))
      const conn = new Redis(process.env.URL)
      const b = await Aedes.createBroker({ id: 'refusals', persistence: aedesPersistenceRedis({ conn }) })
      const server = net.createServer(b.handle)
      await new Promise(r => server.listen(0, '127.0.0.1', r))
      const client = mqtt.connect('mqtt://127.0.0.1:' + server.address().port, { clientId: 'u:w', clean: false, reconnectPeriod: 0, will: { topic: 't', payload: 'gone', qos: 1 } })
      client.on('error', () => {})
      const connected = await new Promise(r => { client.once('connect', () => r(true)); client.once('close', () => r(false)) })
      await conn.ping() // answered after every command sent before it (one connection, in order)
      await new Promise(r => setTimeout(r, 300))
      console.log(JSON.stringify({ connected, unhandled: [...new Set(unhandled)] }))
      process.exit(0)`
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, URL: r().url }, encoding: 'utf8', timeout: 20_000 })
    expect(JSON.parse(out.trim().split('\n').pop() ?? '')).toEqual({ connected: false, unhandled: ['NOREPLICAS'] })
  })

  test('workaround: nothing stored; with writes refused a client with a will (persistent session) still connects, no rejection unhandled', async () => {
    const backends = createBrokerBackends({ adapter: 'redis', url: r().url, packetTTLSeconds: 60, maxSessionDelivery: 100, watchersListMs: 10_000, socketTimeoutMs: 10_000 }, { sessionQueueMessages: 100, sessionQueueBytes: 1 << 20 }, recordingLogger('info').logger)
    const rig = await broker(backends.persistence, backends.mq, async () => { await backends.close() })
    try {
      const first = await connectWithWill(rig)
      expect(first.connected).toBe(true)
      expect(await willKeys()).toEqual([])
      await first.client.endAsync()
      await r().admin.config('SET', 'min-replicas-to-write', '1')
      const again = await connectWithWill(rig)
      expect(again.connected).toBe(true)
      await again.client.endAsync()
      // (jest fails this file on a rejection nobody handled: the stock calls made one per connect)
      await sleep(300)
    } finally {
      await rig.close()
    }
  })

  interface WillStore {
    putWill: (client: { id: string }, packet: object) => Promise<void>
    delWill: (client: { id: string, brokerId?: string }) => Promise<unknown>
    streamWill: (brokers?: Record<string, unknown>) => AsyncIterable<Record<string, unknown>>
  }
  /** Wills as an earlier version stored them: u:x's of the stopped broker old.b, u:y's of the live live.b, and a list entry whose will is gone. */
  async function legacyWills (): Promise<void> {
    const will = (clientId: string, brokerId: string): Buffer => msgpack.encode({ clientId, brokerId, topic: 'im/req/send', payload: Buffer.from('{"id":"w"}'), qos: 1, retain: false, cmd: 'publish' })
    await r().admin.rpush('will', 'will:old.b:u%3Ax', 'will:old.b:u%3Agone', 'will:live.b:u%3Ay')
    await r().admin.set('will:old.b:u%3Ax', will('u:x', 'old.b'))
    await r().admin.set('will:live.b:u%3Ay', will('u:y', 'live.b'))
  }

  test('workaround: a will an earlier version stored is deleted once its broker has stopped, never handed out; connect and close send Redis nothing', async () => {
    const conn = track(new Redis(r().url))
    const store = noRedisWills(aedesPersistenceRedis({ conn }) as WillStore, conn)
    await legacyWills()
    const streamed: unknown[] = []
    for await (const w of store.streamWill({ 'live.b': Date.now() })) streamed.push(w.clientId)
    // nothing streamed; the stopped broker's entries deleted, the live broker's left to it
    expect(streamed).toEqual([])
    expect(await r().admin.lrange('will', 0, -1)).toEqual(['will:live.b:u%3Ay'])
    expect(await r().admin.exists('will:old.b:u%3Ax')).toBe(0)
    // Aedes' calls at connect (its Client, no broker id) and at close (this start's id, under which
    // nothing is stored): nothing done, nothing sent to Redis
    const commands = Number(/total_commands_processed:(\d+)/.exec(await r().admin.info('stats'))?.[1])
    expect(await store.delWill({ id: 'u:y' })).toBeNull()
    expect(await store.delWill({ id: 'u:y', brokerId: 'live.b' })).toBeNull()
    await store.putWill({ id: 'u:z' }, { topic: 't', payload: Buffer.from('x') })
    // (the INFO itself is the one command between)
    expect(Number(/total_commands_processed:(\d+)/.exec(await r().admin.info('stats'))?.[1])).toBe(commands + 1)
    expect(await r().admin.lrange('will', 0, -1)).toEqual(['will:live.b:u%3Ay'])
    // Redis gone: the sweep ends quietly (an error would reach Aedes' 'error' event) and tries again next time
    const gone = new Redis(r().url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false })
    gone.on('error', () => {})
    const streamedGone: unknown[] = []
    for await (const w of noRedisWills(aedesPersistenceRedis({ conn: gone }) as WillStore, gone).streamWill({})) streamedGone.push(w)
    expect(streamedGone).toEqual([])
    gone.disconnect()
  })

  /**
   * Aedes' will sweep (every 4 heartbeats) with a device of the will's client id connected here:
   * the will read back from Redis reaches authorizePublish with that device's client, which the
   * gateway (src/gateway/hooks.ts) cannot tell from the device's own publish (isWillOf compares
   * with the will object the device connected with): a will on a request topic would run as a
   * request of that device.
   */
  async function sweep (persistence: (conn: Redis) => unknown): Promise<Array<{ client: string | null, topic: string }>> {
    const conn = track(new Redis(r().url))
    await legacyWills()
    const seen: Array<{ client: string | null, topic: string }> = []
    const b = await Aedes.createBroker({ id: 'sweeper', heartbeatInterval: 50, persistence: persistence(conn) as never })
    b.authorizePublish = (client, packet, cb) => {
      seen.push({ client: client?.id ?? null, topic: packet.topic })
      cb(null)
    }
    const server = net.createServer(b.handle as (socket: net.Socket) => void)
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    try {
      const device = track(mqtt.connect(`mqtt://127.0.0.1:${(server.address() as net.AddressInfo).port}`, { clientId: 'u:x', reconnectPeriod: 0 }))
      device.on('error', () => {})
      await waitUntil(() => device.connected, 10_000, 'u:x connected')
      // a few sweeps (200 ms apart): until every will is gone from Redis (the stock sweep deletes
      // each after publishing it; neither broker is heard from here)
      await waitUntil(async () => (await r().admin.keys('will*')).length === 0, 10_000, 'every will deleted')
      device.end(true)
    } finally {
      await new Promise<void>(resolve => b.close(() => resolve()))
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
    return seen
  }

  test('upstream: the stock persistence hands a stopped broker\'s will to the sweep, which authorizes it as a publish of the device connected under that id', async () => {
    const seen = await sweep(conn => aedesPersistenceRedis({ conn }))
    expect(seen).toContainEqual({ client: 'u:x', topic: 'im/req/send' })
  })

  test('workaround: the sweep is handed nothing; the wills of brokers it has not heard from are deleted', async () => {
    const seen = await sweep(conn => noRedisWills(aedesPersistenceRedis({ conn }), conn))
    expect(seen.filter(p => p.topic === 'im/req/send')).toEqual([])
    // (live.b sends no heartbeat here: stopped, for this broker)
    expect(await r().admin.keys('will*')).toEqual([])
  })
})

describe('a persistent session\'s queue replayed at reconnect (workaround 22)', () => {
  /** Calls of each command since the last CONFIG RESETSTAT. */
  async function calls (): Promise<Record<string, number>> {
    const out: Record<string, number> = {}
    for (const m of (await r().admin.info('commandstats')).matchAll(/cmdstat_(\w+):calls=(\d+)/g)) out[m[1] as string] = Number(m[2])
    return out
  }
  type Replaying = Store & { outgoingStream: (client: { id: string, clean?: boolean }) => AsyncIterable<{ brokerCounter?: number }> }
  async function replay (store: Replaying): Promise<number[]> {
    const counters: number[] = []
    for await (const p of store.outgoingStream({ id: 'u:a', clean: false })) counters.push(Number(p.brokerCounter))
    return counters
  }
  const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

  test('upstream: the stock persistence reads one packet per GET; an expired one, with writes refused, leaves a rejection nobody handles', async () => {
    const conn = track(new Redis(r().url))
    const store = aedesPersistenceRedis({ conn, maxSessionDelivery: 200, packetTTL: () => 60 }) as Replaying
    for (const i of range(1, 150)) await store.outgoingEnqueueCombi([sub], packet(i))
    await r().admin.config('RESETSTAT')
    expect(await replay(store)).toEqual(range(1, 150))
    expect(await calls()).toMatchObject({ get: 150 })
    // packet 2 expired, writes refused: in a child process (its unhandled rejections are what is looked at)
    await r().admin.del(redisPacketKey('b1', 2))
    await r().admin.config('SET', 'min-replicas-to-write', '1')
    const script = `
      import aedesPersistenceRedis from 'aedes-persistence-redis'
      import { Redis } from 'ioredis'
      const unhandled = []
      process.on('unhandledRejection', r => unhandled.push(String(r.message).split(' ')[0]))
      const conn = new Redis(process.env.URL)
      const replayed = []
      for await (const p of aedesPersistenceRedis({ conn }).outgoingStream({ id: 'u:a' })) replayed.push(p.brokerCounter)
      await conn.ping() // answered after every command sent before it (one connection, in order)
      await new Promise(r => setTimeout(r, 300))
      console.log(JSON.stringify({ replayed: replayed.length, unhandled }))
      process.exit(0)`
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, URL: r().url }, encoding: 'utf8', timeout: 20_000 })
    expect(JSON.parse(out.trim().split('\n').pop() ?? '')).toEqual({ replayed: 149, unhandled: ['NOREPLICAS'] })
  })

  test('workaround: 16 packets per MGET, in queue order; expired and undecodable entries removed once writes are taken, kept (and no rejection unhandled) while refused', async () => {
    const backends = createBrokerBackends({ adapter: 'redis', url: r().url, packetTTLSeconds: 60, maxSessionDelivery: 200, watchersListMs: 10_000, socketTimeoutMs: 10_000 }, { sessionQueueMessages: 100, sessionQueueBytes: 1 << 20 }, recordingLogger('info').logger)
    try {
      const store = backends.persistence as Replaying
      for (const i of range(1, 150)) await store.outgoingEnqueueCombi([sub], packet(i))
      const queue = redisQueueKey('u:a')
      // 2 expired; 3 not a packet (hostile or corrupt bytes: 0xc1 is no msgpack type); 4 msgpack of no object
      await r().admin.del(redisPacketKey('b1', 2))
      await r().admin.set(redisPacketKey('b1', 3), Buffer.from([0xc1, 0x00]))
      await r().admin.set(redisPacketKey('b1', 4), msgpack.encode('text'))
      const kept = range(5, 150)

      // writes refused: every packet there handed over; the removals refused, the entries kept
      await r().admin.config('SET', 'min-replicas-to-write', '1')
      expect(await replay(store)).toEqual([1, ...kept])
      expect(await r().admin.llen(queue)).toBe(150)
      // (jest fails this file on a rejection nobody handled)
      await sleep(200)

      // writes taken: one LRANGE, ten MGETs (16 entries each, 6 in the last), no GET; the three entries removed
      await r().admin.config('SET', 'min-replicas-to-write', '0')
      await r().admin.config('RESETSTAT')
      expect(await replay(store)).toEqual([1, ...kept])
      await waitUntil(async () => await r().admin.llen(queue) === 147, 5000, 'the three entries removed')
      const stats = await calls()
      expect({ lrange: stats.lrange, mget: stats.mget, get: stats.get ?? 0, lrem: stats.lrem }).toEqual({ lrange: 1, mget: 10, get: 0, lrem: 3 })
      expect(await r().admin.lrange(queue, 0, -1)).toEqual([1, ...kept].map(i => redisPacketKey('b1', i)))
      // a queue grown past its bound (workaround 14 keeps its newest maxSessionDelivery): all of it, in order
      for (const i of range(151, 260)) await store.outgoingEnqueueCombi([sub], packet(i))
      expect(await replay(store)).toEqual(range(61, 260))
      // an empty queue: nothing, and its LRANGE the one command of the replay
      await r().admin.del(queue)
      await r().admin.config('RESETSTAT')
      expect(await replay(store)).toEqual([])
      const empty = await calls()
      expect({ lrange: empty.lrange, mget: empty.mget ?? 0, lrem: empty.lrem ?? 0 }).toEqual({ lrange: 1, mget: 0, lrem: 0 })
    } finally {
      await backends.close()
    }
  })
})

describe('the upload quota in Redis (RedisUploadQuota)', () => {
  test('counts per user and day, refuses past the limit without counting; the counter always expires; writes refused: an error clients get as UNAVAILABLE', async () => {
    const conn = track(new Redis(r().url))
    const quota = new RedisUploadQuota(conn)
    const now = Date.UTC(2026, 11, 4, 12)
    const key = `mqim:upload-bytes:u1:${Math.floor(now / 86_400_000)}`
    expect(await quota.take('u1', 600, 1000, now)).toBe(true)
    expect(await quota.take('u1', 500, 1000, now)).toBe(false)
    expect(await quota.take('u1', 400, 1000, now)).toBe(true)
    expect(await r().admin.get(key)).toBe('1000')
    // a counter left without expiry (as a count run twice could leave one before): given one at the next upload
    await r().admin.persist(key)
    expect(await quota.take('u1', 1, 1000, now)).toBe(false)
    const ttl = await r().admin.pttl(key)
    expect(ttl).toBeGreaterThan(2 * 86_400_000 - 60_000)
    expect(ttl).toBeLessThanOrEqual(2 * 86_400_000)
    // another user, another day: counted apart
    expect(await quota.take('u2', 1000, 1000, now)).toBe(true)
    expect(await quota.take('u1', 1000, 1000, now + 86_400_000)).toBe(true)
    await r().admin.config('SET', 'min-replicas-to-write', '1')
    const err = await quota.take('u1', 1, 1000, now).then(() => null, (e: unknown) => e)
    expect(String(err)).toMatch(/NOREPLICAS/)
    expect(isStoreUnavailable(err)).toBe(true)
    expect(await r().admin.get(key)).toBe('1000')
  })
})

describe('Redis errors a request meets (isStoreUnavailable: UNAVAILABLE, retry later; else INTERNAL, a bug)', () => {
  test('refusals, a refused MULTI, a closed connection, retries used up: unavailable; a wrong type or a script error: not', async () => {
    const conn = track(new Redis(r().url))
    const failure = async (p: Promise<unknown>): Promise<unknown> => await p.then(() => null, (e: unknown) => e)
    await conn.set('s', 'x')
    expect(isStoreUnavailable(await failure(conn.lpush('s', 'y')))).toBe(false)
    expect(isStoreUnavailable(await failure(conn.eval('return redis.call("NOPE")', 0)))).toBe(false)
    await r().admin.config('SET', 'min-replicas-to-write', '1')
    expect(isStoreUnavailable(await failure(conn.set('a', '1')))).toBe(true)
    const multi = await failure(conn.multi().incr('n').expire('n', 60).exec())
    expect(String(multi)).toMatch(/EXECABORT/)
    expect(isStoreUnavailable(multi)).toBe(true)
    await r().admin.config('SET', 'min-replicas-to-write', '0')
    await outOfMemory(r().admin)
    expect(isStoreUnavailable(await failure(conn.set('big', 'y'.repeat(1000))))).toBe(true)
    await r().admin.config('SET', 'maxmemory', '0')
    conn.disconnect()
    expect(isStoreUnavailable(await failure(conn.get('a')))).toBe(true)
    const none = track(new Redis({ port: 1, maxRetriesPerRequest: 1, retryStrategy: () => 10 }))
    none.on('error', () => {})
    const retried = await failure(none.get('a'))
    expect(String(retried)).toMatch(/MaxRetriesPerRequest|max retries/i)
    expect(isStoreUnavailable(retried)).toBe(true)
  })
})
