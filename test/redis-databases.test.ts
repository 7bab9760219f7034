/**
 * Two deployments on one Redis server, each on a database of its own (staging next to production,
 * or two test clusters at once): Redis pub/sub ignores the database, and the emitter's channels
 * were named by the topics alone, so a message to a user reached the other deployment's devices
 * of the same user id. The channels are now named after the database (src/broker/upstream.ts, 20).
 */
import { clusterOverrides } from './helpers/cluster.js'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'

const DB_A = 19
const DB_B = 20

describe('deployments on different databases of one Redis server do not hear each other', () => {
  let a: MqimServer
  let b: MqimServer
  const clients: ImClient[] = []

  beforeAll(async () => {
    a = await startServer({ ...(await clusterOverrides(DB_A)), nodeId: 'rdb-a' })
    b = await startServer({ ...(await clusterOverrides(DB_B)), nodeId: 'rdb-b' })
    for (const server of [a, b]) for (const u of ['rdb.alice', 'rdb.bob']) await addUser(server, u)
  }, 60_000)

  afterAll(async () => {
    await Promise.allSettled(clients.map(async c => await c.end()))
    await Promise.allSettled([a?.stop(), b?.stop()])
  })

  test('a message in one reaches its member there, not the device of the same user id in the other (persistent and clean sessions)', async () => {
    const track = (c: ImClient): ImClient => { clients.push(c); return c }
    const aliceA = track(await connect(a, 'rdb.alice', 'phone'))
    const bobA = track(await connect(a, 'rdb.bob', 'phone', { clean: false }))
    const aliceB = track(await connect(b, 'rdb.alice', 'phone'))
    const bobB = track(await connect(b, 'rdb.bob', 'phone', { clean: false }))
    const bobB2 = track(await connect(b, 'rdb.bob', 'tablet'))
    const { conv: convA } = await aliceA.request('direct', { user: 'rdb.bob' })
    const { conv: convB } = await aliceB.request('direct', { user: 'rdb.bob' })
    for (let i = 0; i < 5; i++) await aliceA.request('send', { conv: convA, msgId: `a${i}`, kind: 'text', body: `in A ${i}` })
    await bobA.waitFor(() => bobA.messages.length === 5, 10_000, 'bob in A gets the five messages')
    // then one in B: it crosses the same Redis server after the five, so by the time B's devices
    // have it, anything of A's that reached B's node has been delivered too
    await aliceB.request('send', { conv: convB, msgId: 'b0', kind: 'text', body: 'in B' })
    for (const c of [bobB, bobB2]) await c.waitFor(() => c.messages.some(m => m.msgId === 'b0'), 10_000, `${c.deviceId} in B gets B's message`)
    for (const c of [bobB, bobB2]) expect(c.messages.map(m => m.body)).toStrictEqual(['in B'])
    expect(bobA.messages.map(m => m.body)).toStrictEqual(['in A 0', 'in A 1', 'in A 2', 'in A 3', 'in A 4'])
  })
})
