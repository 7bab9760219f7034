/**
 * A node restarted under the same node id (a fixed MQIM_NODE_ID, as README's cluster example runs
 * it) must not write its new queued packets over those it queued before the restart. Queued QoS 1
 * packets live in Redis under `packet:<broker id>:<counter>`, and Aedes counts from 0 at every
 * start: with the node id as the broker id, the packets of the second start took the keys of the
 * first's, so a persistent session that came back after the restart was sent, in place of its own
 * queued message, what had been queued for someone else. Each start now has a broker id of its own
 * (src/server.ts, brokerIdFor).
 */
import { Redis } from 'ioredis'
import { clusterOverrides } from './helpers/cluster.js'
import { redisUrl } from './helpers/db.js'
import { startServer, addUser, connect, waitUntil, type ImClient } from './helpers/im.js'
import { redisQueueKey } from '../src/broker/upstream.js'
import { brokerIdFor, type MqimServer } from '../src/server.js'

const REDIS_DB = 28

test('brokerIdFor: the node id and a random part, another at every call', () => {
  const ids = new Set(Array.from({ length: 100 }, () => brokerIdFor('n1')))
  expect(ids.size).toBe(100)
  for (const id of ids) expect(id).toMatch(/^n1\.[0-9a-f]{12}$/)
})

describe('a node restarted under its node id', () => {
  let server: MqimServer | null = null
  let db: Redis
  const clients: ImClient[] = []
  const track = (c: ImClient): ImClient => { clients.push(c); return c }
  afterAll(async () => {
    await Promise.allSettled(clients.map(async c => await c.end()))
    await server?.stop()
    await db?.quit()
  })

  test('keeps what it queued before the restart: each session gets its own queued messages', async () => {
    const overrides = { ...(await clusterOverrides(REDIS_DB)), nodeId: 'rq-n1' }
    const url = new URL(redisUrl())
    url.pathname = `/${REDIS_DB}`
    db = new Redis(url.toString())
    server = await startServer(overrides)
    for (const u of ['rq.alice', 'rq.bob', 'rq.carol']) await addUser(server, u)
    const alice = track(await connect(server, 'rq.alice', 'phone'))
    const { conv: toBob } = await alice.request('direct', { user: 'rq.bob' })
    const { conv: toCarol } = await alice.request('direct', { user: 'rq.carol' })
    for (const u of ['rq.bob', 'rq.carol']) await (await connect(server, u, 'phone', { clean: false })).end()
    await alice.request('send', { conv: toBob, msgId: 'b1', kind: 'text', body: 'for bob' })
    await waitUntil(async () => await db.llen(redisQueueKey('rq.bob:phone')) === 1, 10_000, 'bob\'s message queued')
    const [bobsKey] = await db.lrange(redisQueueKey('rq.bob:phone'), 0, -1)

    await alice.end()
    await server.stop()
    server = await startServer(overrides)
    const alice2 = track(await connect(server, 'rq.alice', 'phone'))
    for (let i = 0; i < 40; i++) await alice2.request('send', { conv: toCarol, msgId: `c${i}`, kind: 'text', body: `for carol ${i}` })
    await waitUntil(async () => await db.llen(redisQueueKey('rq.carol:phone')) === 40, 10_000, 'carol\'s messages queued')
    const carolsKeys = await db.lrange(redisQueueKey('rq.carol:phone'), 0, -1)
    // the second start's packets are under another broker id: none can take the first's key
    const brokerOf = (key: string | undefined): string => (key ?? '').split(':').slice(1, -1).join(':')
    expect(brokerOf(bobsKey)).toMatch(/^rq-n1\./)
    for (const k of carolsKeys) expect(brokerOf(k)).not.toBe(brokerOf(bobsKey))
    expect(carolsKeys).not.toContain(bobsKey)

    // each gets exactly their own
    const bob = track(await connect(server, 'rq.bob', 'phone', { clean: false, subscribe: false }))
    const carol = track(await connect(server, 'rq.carol', 'phone', { clean: false, subscribe: false }))
    await carol.waitFor(() => carol.messages.length >= 40, 15_000, 'carol\'s 40 queued messages')
    await bob.waitFor(() => bob.messages.length >= 1, 15_000, 'bob\'s queued message')
    await new Promise(resolve => setTimeout(resolve, 300))
    expect(bob.messages.map(m => [m.conv, m.body])).toEqual([[toBob, 'for bob']])
    expect(carol.messages.map(m => m.body)).toEqual(Array.from({ length: 40 }, (_, i) => `for carol ${i}`))
  })
})
