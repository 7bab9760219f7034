/**
 * The cluster fan-out (src/broker/fanout.ts) on two nodes (Redis + MongoDB + MySQL): a group
 * message crosses Redis once, as one message on the fan-out channel naming every member's inbox,
 * instead of a publish per member; members on both nodes get it once; persistent sessions still
 * get it queued (offline: replayed on the other node) and released by their acknowledgement
 * (online: the queued copy and the live one are the same packet); and what is not a fan-out of
 * ours on that channel is dropped without harm.
 */
import { Redis } from 'ioredis'
import msgpack from 'msgpack-lite'
import { clusterOverrides } from './helpers/cluster.js'
import { redisUrl } from './helpers/db.js'
import { startServer, addUser, connect, waitUntil, type ImClient } from './helpers/im.js'
import { redisQueueKey } from '../src/broker/upstream.js'
import { FAN_TOPIC } from '../src/protocol/topics.js'
import { emitterChannel } from '../src/broker/upstream.js'
import type { MqimServer } from '../src/server.js'

const REDIS_DB = 3

describe('fan-out across two nodes', () => {
  let n1: MqimServer
  let n2: MqimServer
  let db: Redis
  let sub: Redis
  // what crossed Redis for this test's users (pub/sub is not per database: other tests' are filtered out)
  const perUser: string[] = []
  const fanned: Array<{ topics: string[], counters: number[], qos: number }> = []
  const clients: ImClient[] = []
  const track = (c: ImClient): ImClient => { clients.push(c); return c }

  beforeAll(async () => {
    const overrides = await clusterOverrides(REDIS_DB)
    n1 = await startServer({ ...overrides, nodeId: 'f1' })
    n2 = await startServer({ ...overrides, nodeId: 'f2' })
    for (const u of ['fo.a', 'fo.b', 'fo.c', 'fo.d', 'fo.e']) await addUser(n1, u)
    const url = new URL(redisUrl())
    url.pathname = `/${REDIS_DB}`
    db = new Redis(url.toString())
    sub = new Redis(redisUrl())
    sub.on('pmessageBuffer', (_pattern: Buffer, channel: Buffer) => { perUser.push(channel.toString()) })
    sub.on('messageBuffer', (channel: Buffer, message: Buffer) => {
      if (channel.toString() !== emitterChannel(REDIS_DB, FAN_TOPIC)) return
      try {
        const { msg } = msgpack.decode(message) as { msg: { topics?: unknown, counters: number[], qos: number } }
        if (Array.isArray(msg.topics) && msg.topics.some(t => typeof t === 'string' && t.startsWith('im/u/fo.'))) fanned.push({ topics: msg.topics as string[], counters: msg.counters, qos: msg.qos })
      } catch {}
    })
    await sub.psubscribe(emitterChannel(REDIS_DB, 'im/u/fo.*'))
    await sub.subscribe(emitterChannel(REDIS_DB, FAN_TOPIC))
  }, 60_000)
  afterEach(async () => { await Promise.allSettled(clients.splice(0).map(async c => await c.end())) })
  afterAll(async () => {
    await Promise.allSettled([n1.stop(), n2.stop()])
    sub.disconnect()
    db.disconnect()
  })

  test('a group message crosses Redis once, naming every inbox; members on both nodes get it once', async () => {
    const a = track(await connect(n1, 'fo.a', 'phone'))
    const b = track(await connect(n2, 'fo.b', 'phone'))
    const c1 = track(await connect(n1, 'fo.c', 'one'))
    const c2 = track(await connect(n2, 'fo.c', 'two'))
    const { conv } = await a.request('create-group', { name: 'fan', members: ['fo.b', 'fo.c', 'fo.d'] })
    await new Promise(resolve => setTimeout(resolve, 300))
    perUser.length = 0
    fanned.length = 0
    const sent = await a.request('send', { conv, msgId: 'f1', kind: 'text', body: 'to all' })
    for (const c of [a, b, c1, c2]) await c.waitFor(() => c.messages.some(m => m.conv === conv && m.seq === sent.seq), 10_000, `${c.userId}:${c.deviceId} gets it`)
    await new Promise(resolve => setTimeout(resolve, 300))
    const inboxes = ['fo.a', 'fo.b', 'fo.c', 'fo.d'].map(u => `im/u/${u}/m`)
    const ofMessage = fanned.filter(f => f.topics.some(t => t.endsWith('/m')))
    expect(ofMessage).toHaveLength(1)
    expect([...ofMessage[0]!.topics].sort()).toEqual(inboxes)
    expect(ofMessage[0]!.qos).toBe(1)
    expect(new Set(ofMessage[0]!.counters).size).toBe(4)
    // not one publish on a member's own inbox channel
    expect(perUser.filter(ch => ch.endsWith('/m'))).toEqual([])
    for (const c of [a, b, c1, c2]) expect(c.messages.filter(m => m.conv === conv).map(m => m.seq)).toEqual([sent.seq])
  })

  test('persistent sessions: offline, queued and replayed on the other node in order; online, released by the PUBACK', async () => {
    const a = track(await connect(n1, 'fo.a', 'phone'))
    const { conv } = await a.request('create-group', { name: 'fan-persistent', members: ['fo.d', 'fo.e'] })
    const away = await connect(n1, 'fo.d', 'phone', { clean: false })
    await away.end()
    const online = track(await connect(n2, 'fo.e', 'tab', { clean: false }))
    await db.del(redisQueueKey('fo.e:tab'))
    for (let i = 1; i <= 3; i++) await a.request('send', { conv, msgId: `p${i}`, kind: 'text', body: `queued ${i}` })
    await online.waitFor(() => online.messages.filter(m => m.conv === conv).length >= 3, 10_000, 'the online persistent session gets 3')
    // each live delivery is the queued packet: its PUBACK releases the queue entry
    await waitUntil(async () => await db.llen(redisQueueKey('fo.e:tab')) === 0, 10_000, 'the online session\'s queue empty after its acknowledgements')
    expect(await db.llen(redisQueueKey('fo.d:phone'))).toBeGreaterThanOrEqual(3)
    const back = track(await connect(n2, 'fo.d', 'phone', { clean: false, subscribe: false }))
    await back.waitFor(() => back.messages.filter(m => m.conv === conv).length >= 3, 15_000, 'the queued messages on node 2')
    await new Promise(resolve => setTimeout(resolve, 300))
    expect(back.messages.filter(m => m.conv === conv).map(m => m.body)).toEqual(['queued 1', 'queued 2', 'queued 3'])
    expect(online.messages.filter(m => m.conv === conv).map(m => m.body)).toEqual(['queued 1', 'queued 2', 'queued 3'])
    await waitUntil(async () => await db.llen(redisQueueKey('fo.d:phone')) === 0, 10_000, 'the replayed queue empty after its acknowledgements')
  })

  test('what is not one of our fan-outs on the channel is dropped; the nodes go on delivering', async () => {
    const a = track(await connect(n1, 'fo.a', 'phone'))
    const b = track(await connect(n2, 'fo.b', 'phone'))
    const { conv } = await a.request('create-group', { name: 'fan-hostile', members: ['fo.b'] })
    const pub = new Redis(redisUrl())
    try {
      const payload = Buffer.from(JSON.stringify({ conv, seq: 999, sender: 'fo.mallory', kind: 'text', body: 'forged' }))
      const forged = [
        Buffer.from('not msgpack at all \xc1'),
        msgpack.encode({ id: 'x1', msg: { topic: FAN_TOPIC } }),
        msgpack.encode({ id: 'x2', msg: { topic: FAN_TOPIC, payload, qos: 1, brokerId: 'evil', topics: ['im/u/fo.b/m'], counters: [1, 2] } }),
        msgpack.encode({ id: 'x3', msg: { topic: FAN_TOPIC, payload, qos: 1, brokerId: 'evil', topics: ['$SYS/x', 'im/u/fo.b/m'], counters: [1, 2] } }),
        msgpack.encode({ id: 'x4', msg: { topic: FAN_TOPIC, payload, qos: 2, brokerId: 'evil', topics: ['im/u/fo.b/m'], counters: [1] } }),
        msgpack.encode({ id: 'x5', msg: { topic: FAN_TOPIC, payload: 'text', qos: 1, brokerId: 'evil', topics: ['im/u/fo.b/m'], counters: [1] } })
      ]
      for (const f of forged) await pub.publish(emitterChannel(REDIS_DB, FAN_TOPIC), f)
    } finally {
      pub.disconnect()
    }
    const sent = await a.request('send', { conv, msgId: 'h1', kind: 'text', body: 'after the junk' })
    await b.waitFor(() => b.messages.some(m => m.conv === conv && m.seq === sent.seq), 10_000, 'the real message on node 2')
    expect(b.messages.filter(m => m.conv === conv).map(m => m.body)).toEqual(['after the junk'])
    for (const n of [n1, n2]) expect((await fetch(`http://127.0.0.1:${n.ports.http}/healthz`)).status).toBe(200)
  })
})
